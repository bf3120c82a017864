"""Packaging for the CMML cold-start recommendation pipeline.

The repository keeps the top-level folders the project was asked for (``models/``,
``pipeline/``, ``components/``, ``schemas/``, ``serving/``, ``bench/``) but installs them as
sub-packages of one namespace, ``cmml``: ``models/`` is imported as ``cmml.models`` and so on.
Nothing with a generic top-level name (``models``, ``pipeline``) lands in site-packages.
See BUILD.md, "Package layout".
"""

from pathlib import Path

from setuptools import setup

# folder in the repository -> import name
PACKAGE_DIRS = {
    "cmml": "cmml",
    "cmml.data": "data",
    "cmml.models": "models",
    "cmml.components": "components",
    "cmml.pipeline": "pipeline",
    "cmml.schemas": "schemas",
    "cmml.serving": "serving",
    "cmml.experiments": "experiments",
}


def _packages() -> dict[str, str]:
    """PACKAGE_DIRS plus every sub-package folder (one with an ``__init__.py``) below them."""
    out = dict(PACKAGE_DIRS)
    for name, folder in PACKAGE_DIRS.items():
        for init in sorted(Path(folder).glob("*/**/__init__.py")):
            sub = init.parent.relative_to(folder)
            out[".".join([name, *sub.parts])] = str(Path(folder, sub))
    return out


# Direct requirements; the exact, resolved set is pinned in constraints.txt.
INSTALL_REQUIRES = [
    "tfx==1.16.0",
    "tensorflow==2.16.2",
    "tf-keras~=2.16.0",
    "tensorflow-recommenders==0.7.7",
    "tensorflow-serving-api~=2.16.1",
    "dill",  # tfx_bsl imports it; recent Beam no longer pulls it in
    "kfp-pipeline-spec>=0.2,<0.3",  # Kubeflow Pipelines V2 runner
    "pyyaml",
    "scikit-learn",
    "matplotlib",
]

# Optional: the full-catalog evaluation's ALS baseline (`cmml full-catalog`, experiments/full_catalog.py) uses the
# `implicit` library; without it that row fails with a message saying how to install it. The test environment has it.
EVAL_REQUIRES = ["implicit"]

setup(
    name="cmml-tfx",
    version="0.1.0",
    description="Contextual Modulation Meta Learning (CMML) for cold-start recommendation, "
    "as a TensorFlow Extended pipeline",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.11",
    packages=list(_packages()),
    package_dir=_packages(),
    package_data={
        "cmml.schemas": ["*.pbtxt", "*.md"],
        "cmml.pipeline": ["configs/*.yaml", "configs/experiments/*.yaml"],
    },
    include_package_data=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest>=7", "pytest-timeout", "ruff", *EVAL_REQUIRES], "eval": EVAL_REQUIRES},
    entry_points={"console_scripts": ["cmml = cmml.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
