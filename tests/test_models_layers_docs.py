"""Every layer docstring of cmml.models.layers has an example, and the examples run as written."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import tensorflow as tf

import cmml  # noqa: F401
import cmml.models.layers as layers_package

MODULES = [
    importlib.import_module(f"{layers_package.__name__}.{info.name}")
    for info in pkgutil.iter_modules(layers_package.__path__)
]
LAYERS = [
    obj
    for module in MODULES
    for obj in vars(module).values()
    if inspect.isclass(obj) and issubclass(obj, tf.keras.layers.Layer) and obj.__module__ == module.__name__
]


def test_every_module_and_layer_is_found():
    assert {m.__name__.rsplit(".", 1)[-1] for m in MODULES} >= {
        "core",
        "embeddings",
        "encoders",
        "hybrid",
        "modulation",
        "routing",
        "relevance",
    }
    assert len(LAYERS) == 14


@pytest.mark.parametrize("layer", LAYERS, ids=lambda cls: cls.__name__)
def test_layer_docstring_has_the_reference_sections(layer):
    doc = inspect.getdoc(layer)
    for section in ("Call args:", "Returns:", "References:", "Example:"):
        assert section in doc, f"{layer.__name__}: no {section}"
    if layer.__init__ is not tf.keras.layers.Layer.__init__:
        assert "Args:" in doc.replace("Call args:", ""), f"{layer.__name__}: no Args:"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples_run(module):
    tf.keras.utils.set_random_seed(0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module.__name__, globs=dict(vars(module))) if t.examples]
    assert tests, f"{module.__name__} has no docstring examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {module.__name__} failed"
