"""Experiments: the paper's tables on real data (RESULTS.md), validation sweeps and interpretability studies.

``cmml experiment`` / ``cmml sweep`` / ``cmml interpret`` (:mod:`.cli`). Suites, sweeps and study
settings are YAML files under ``pipeline/configs/experiments/``. Modules: :mod:`.suites` (what runs),
:mod:`.data` (records through the pipeline's data path), :mod:`.run` (training and scoring through
:func:`cmml.models.training.train`), :mod:`.targets` (the reference figures file), :mod:`.results`
(the JSON results files), :mod:`.findings`, :mod:`.render` and :mod:`.sections` (RESULTS.md),
:mod:`.sweep`, and the package :mod:`.interpret`.
"""
