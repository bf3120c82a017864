"""Experiments: the paper's tables on real data (RESULTS.md), validation sweeps and interpretability studies."""
