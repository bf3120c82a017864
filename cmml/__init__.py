"""CMML: Contextual Modulation Meta Learning for cold-start recommendation, on TFX.

Importing this package selects Keras 2 (``tf-keras``) for TensorFlow before TensorFlow is
imported: tensorflow-recommenders and TFX 1.16 are written against Keras 2, while TensorFlow
2.16 would otherwise pick Keras 3. Sub-packages (``cmml.models``, ``cmml.pipeline`` ...) always
import this module first, so the setting holds for every entry point.
"""

import os
import sys
import warnings

__version__ = "0.1.0"

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CPU feature notices, CUDA plugin registration errors on a
# machine without a GPU, oneDNN fallbacks) buries the pipeline's own progress; failures still reach
# Python as exceptions. `cmml ... --verbose` (or an explicit TF_CPP_MIN_LOG_LEVEL) shows it again.
TF_LOG_LEVEL_CHOSEN_BY_USER = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# google-api-core warns once per Google client module on Python 3.10 (TFX pulls dozens of them)
warnings.filterwarnings("ignore", message="You are using a non-supported Python version", category=FutureWarning)

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    raise ImportError(
        "cmml needs Keras 2 (tf-keras): set TF_USE_LEGACY_KERAS=1 before importing TensorFlow, "
        "or import cmml before tensorflow."
    )
