"""Micro-benchmarks (figures in BENCHMARKS.md), run from the repository root: ``python -m bench.<module>``.

Not part of the installed package. Importing ``cmml`` here, before any benchmark module imports
TensorFlow, selects Keras 2 for all of them.
"""

import cmml  # noqa: F401
