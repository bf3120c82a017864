"""What the serving clients return: :class:`Prediction`, :class:`VersionState`, and candidates
ranked by score (:func:`rank_items`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np


@dataclasses.dataclass
class Prediction:
    """Outputs of one Predict call; ``version`` is the served version (gRPC reports it, REST does not)."""

    outputs: dict[str, np.ndarray]
    signature_name: str
    version: int | None = None


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # AVAILABLE, LOADING, END ...
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class RankedItem:
    item: Any
    score: float


def rank_items(
    scores: np.ndarray, items: Sequence[Any] | None = None, mask: np.ndarray | None = None, top_k: int | None = None
) -> list[RankedItem]:
    """Candidates by decreasing score (stable for ties); padded candidates (mask 0) are left out.
    ``items`` labels the candidates (default: their positions)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = list(items) if items is not None else list(range(len(scores)))
    if len(labels) > len(scores):
        raise ValueError(f"{len(labels)} item labels for {len(scores)} scores")
    valid = np.arange(len(scores)) < len(labels)
    if mask is not None:
        valid &= np.asarray(mask).reshape(-1)[: len(scores)] > 0
    order = [int(k) for k in np.argsort(-scores, kind="stable") if valid[k]]
    if top_k is not None:
        order = order[:top_k]
    return [RankedItem(labels[k], float(scores[k])) for k in order]
