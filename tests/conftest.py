"""Shared fixtures. Real MovieLens data is read in place from $CMML_SHARED_DATA (never copied); the default
``../shared/data`` beside the checkout is this team's development copy, not part of the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports TensorFlow: the efficiency study reads CPU allocator statistics, which
# TensorFlow keeps only with its BFC allocator; oneDNN turns that on by default on some Intel CPUs only,
# so the suite asks for it and behaves the same on any x86 machine (bench/efficiency.py, ALLOCATOR).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import cmml  # noqa: E402, F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CMML_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """A dataset folder under SHARED_DATA. In CI its absence is an error, elsewhere a visible skip."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = f"real data not found at {path} (set CMML_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return shared_dataset("ml-100k")


@pytest.fixture(scope="session")
def ml1m_partial_dir() -> Path:
    return shared_dataset("ml-1m-partial")


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """A small synthetic dataset (about 1,500 users), generated once per test session."""
    from cmml.data import synthetic

    out = tmp_path_factory.mktemp("synthetic") / "small"
    synthetic.generate(out, synthetic.SyntheticConfig(users=1500, seed=7), progress=None)
    return out


@pytest.fixture(scope="session")
def synthetic_400(tmp_path_factory) -> Path:
    """400 synthetic users (seed 3): the end-to-end pipeline and experiment-runner tests read it (never write)."""
    from cmml.data import synthetic

    out = tmp_path_factory.mktemp("synthetic") / "users400"
    synthetic.generate(out, synthetic.SyntheticConfig(users=400, seed=3), progress=None)
    return out


@pytest.fixture(scope="session")
def data_pipeline(tmp_path_factory):
    """The data components run once as a TFX pipeline on small synthetic data (tests/components_fixtures.py)."""
    from components_fixtures import run_data_pipeline

    return run_data_pipeline(tmp_path_factory.mktemp("data_pipeline"))
