"""Packaging: one `cmml` namespace, no generic top-level modules, Keras 2 selected by the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


def _python(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_imports_as_one_namespace_and_no_generic_top_level_modules(tmp_path):
    code = (
        "import importlib.util as u, cmml.models, cmml.pipeline, cmml.components, cmml.schemas, cmml.serving;"
        "print([u.find_spec(n) is None for n in ('models', 'pipeline', 'components', 'schemas', 'serving')])"
    )
    assert _python(code, cwd=tmp_path) == "[True, True, True, True, True]"


def test_package_selects_keras_2_before_tensorflow(tmp_path):
    code = "import cmml, tensorflow as tf; print(tf.keras.__name__, tf.keras.Model.__module__.split('.')[0])"
    out = _python(code, cwd=tmp_path)
    assert out.splitlines()[-1] == "tf_keras.api._v2.keras tf_keras", out


@pytest.mark.slow
def test_wheel_holds_only_the_cmml_namespace(tmp_path):
    # build from a copy: an in-tree build would leave build/ in the checkout
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", "runs")
    )
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("cmml_tfx-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"cmml", "cmml_tfx-0.1.0.dist-info"}, tops
    for sub in ("models", "pipeline", "components", "schemas", "serving", "data"):
        assert f"cmml/{sub}/__init__.py" in names
    assert "cmml/schemas/interaction.pbtxt" in names
    assert {"cmml/pipeline/configs/default.yaml", "cmml/pipeline/configs/users-v1.yaml"} <= set(names)


def test_cli_help_lists_subcommands(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cmml.cli", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("run", "runs", "data", "serve", "predict"):
        assert f"    {command} " in proc.stdout
