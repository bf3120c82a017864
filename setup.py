"""Packaging for the CMML cold-start recommendation pipeline.

The repository keeps the top-level folders the project was asked for (``models/``,
``pipeline/``, ``components/``, ``schemas/``, ``serving/``, ``bench/``) but installs them as
sub-packages of one namespace, ``cmml``: ``models/`` is imported as ``cmml.models`` and so on.
Nothing with a generic top-level name (``models``, ``pipeline``) lands in site-packages.
See BUILD.md, "Package layout".
"""

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

setup(
    name="cmml-tfx",
    version="0.1.0",
    description="Contextual Modulation Meta Learning (CMML) for cold-start recommendation, "
    "as a TensorFlow Extended pipeline",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.11",
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    package_data={"cmml.schemas": ["*.pbtxt", "*.md"], "cmml.pipeline": ["configs/*.yaml"]},
    include_package_data=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest>=7", "pytest-timeout"]},
    entry_points={"console_scripts": ["cmml = cmml.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
