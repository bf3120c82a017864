"""Names of the episode tensors shared by data components, models and serving (see episodes.md)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

SUPPORT = "support"
QUERY = "query"
LABEL = "label"
MASK = "mask"
SIDES = ("user", "item")
KINDS = ("categorical", "multi")
FEATURE_SPECS_FILE = "feature_specs.json"


def key(part: str, name: str) -> str:
    """'support', 'genres' -> 'support_genres'."""
    return f"{part}_{name}"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One transformed feature: index 0 is padding, ``vocab_size`` counts padding and OOV buckets."""

    name: str
    side: str
    kind: str
    vocab_size: int
    max_len: int = 1

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"feature {self.name!r}: side must be one of {SIDES}, not {self.side!r}")
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.vocab_size < 2:
            raise ValueError(f"feature {self.name!r}: vocab_size must be at least 2 (padding + one value)")
        if self.max_len < 1 or (self.kind == "categorical" and self.max_len != 1):
            raise ValueError(f"feature {self.name!r}: max_len must be 1 for categorical, >= 1 for multi")


def save_feature_specs(specs: Iterable[FeatureSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps([dataclasses.asdict(s) for s in specs], indent=1) + "\n", encoding="utf-8")


def load_feature_specs(path: str | Path) -> list[FeatureSpec]:
    path = Path(path)
    if path.is_dir():
        path = path / FEATURE_SPECS_FILE
    return [FeatureSpec(**d) for d in json.loads(path.read_text(encoding="utf-8"))]
