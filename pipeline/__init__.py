"""The TFX pipeline (installed as ``cmml.pipeline``): ``config`` (one YAML configuration, ``configs/``),
``pipeline`` (the components wired once), ``runner`` (local run, Kubeflow V2 compile), ``console``
(what a run prints) and ``runs`` (past runs read back from ML-Metadata)."""
