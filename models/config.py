"""Configuration of CMML models: one dataclass, validated, loadable from YAML/JSON dicts."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

ENCODERS = ("mean", "max", "gru")
HYBRIDS = ("none", "mlp", "dot")
MODULATIONS = ("weight", "sigmoid", "film", "soft", "none")  # none: the backbone alone (no adaptation)
HEADS = ("rating", "ctr")


class ConfigMixin:
    """Mapping round-trips for the frozen config dataclasses (YAML/JSON in, YAML/JSON out).

    Unknown keys are an error naming the known ones; lists become tuples on the way in and
    tuples lists on the way out. ``WHAT`` names the config in messages.
    """

    WHAT = "model"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        return from_mapping(cls, values, cls.WHAT)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


def from_mapping(cls, values: Mapping[str, Any], what: str):
    """``cls(**values)`` for a config dataclass; unknown keys are an error, lists become tuples."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} config key(s): {', '.join(unknown)}; known: {', '.join(fields)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclasses.dataclass(frozen=True)
class CMMLConfig(ConfigMixin):
    """Architecture and optimisation settings.

    Defaults follow the paper: SE (GRU) encoder + dot hybrid + FiLM, MLP 64-64-64, GRU encoder
    with a 128-128 MLP, Adam with learning rate 1e-4.
    """

    WHAT = "CMML"

    head: str = "rating"  # 'rating' (MSE on ratings) or 'ctr' (pairwise hinge on clicks)
    encoder: str = "gru"  # context encoder: 'mean' / 'max' pooling (PE) or 'gru' (SE)
    hybrid: str = "dot"  # hybrid context generator
    modulation: str = "film"  # 'weight', 'sigmoid' (S-LM), 'film' (F-LM), 'soft' (Soft-M), 'none'
    features: tuple[str, ...] | None = None  # feature names to use; None = all in the specs
    embedding_dim: int = 32  # per feature
    hidden: tuple[int, ...] = (64, 64, 64)  # backbone MLP
    label_hidden: tuple[int, ...] = (64, 64)  # g(y)
    encoder_hidden: tuple[int, ...] = (128,)  # PE: per-interaction MLP before pooling
    gru_units: int = 128
    encoder_mlp: tuple[int, ...] = (128, 128)  # SE: MLP after the GRU
    hybrid_mlp: tuple[int, ...] = (128,)  # 'mlp' hybrid hidden layers (output width = input width)
    hyper_hidden: tuple[int, ...] = (64, 64, 64)  # modulation hyper-network trunk
    soft_layers: int = 3  # Soft-M: k layers ...
    soft_modules: int = 4  # ... of m modules ...
    soft_width: int = 32  # ... each d wide
    item_bias: bool = False  # a learned per-item scalar b_i added to the score
    support_bias: bool = False  # rating head: add b_u = shrunk mean residual of the support set
    residual_labels: bool = False  # the encoder sees y - (offset + b_i) instead of y
    positives_only_context: bool = False  # ablation "Non-negative-PE": encode only label-1 rows
    permute_support: bool = True  # shuffle each support set at every training step
    dropout: float = 0.0
    listwise_weight: float = 0.0  # rating head: + w · ListNet cross-entropy over each task's query set
    listwise_temperature: float = 1.0  # τ of the target distribution softmax(y / τ)
    # catalog relevance head (recommend's ranking): > 0 adds it, and w · its sampled softmax of each task's
    # liked query items against items drawn uniformly from the item vocabulary to the loss (its inputs are
    # held fixed, so w does not trade it against the rating loss); 0 = no head, recommend ranks by the score
    catalog_weight: float = 0.0
    catalog_negatives: int = 256  # items drawn per training batch
    catalog_dim: int = 32  # width of the relevance head's query and item vectors
    catalog_hidden: tuple[int, ...] = (64,)  # its query MLP's hidden layers
    catalog_liked: float | None = None  # a query row labelled at least this is a positive (None: 4 for
    # ratings, 0.5 for the ctr head's 0/1 labels)
    catalog_rating_weight: float = 0.0  # recommend ranks by relevance + w · score (0: relevance alone)
    catalog_lr_multiplier: float = 1.0  # the head's item tables learn this many times faster
    learning_rate: float = 1e-4
    l2: float = 0.0  # L2 penalty on embedding tables and item biases

    def __post_init__(self):
        for name, allowed in (("head", HEADS), ("encoder", ENCODERS), ("hybrid", HYBRIDS), ("modulation", MODULATIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"CMMLConfig.{name} = {value!r}: choose one of {', '.join(allowed)}")
        for name in ("hidden", "label_hidden", "encoder_mlp", "hyper_hidden"):
            if not getattr(self, name):
                raise ValueError(f"CMMLConfig.{name} must have at least one layer")
        if min(self.soft_layers, self.soft_modules, self.soft_width, self.embedding_dim, self.gru_units) < 1:
            raise ValueError("CMMLConfig sizes must be positive")
        if self.support_bias and self.head != "rating":
            raise ValueError("CMMLConfig.support_bias applies to the rating head only")
        if self.listwise_weight < 0.0 or self.listwise_temperature <= 0.0:
            raise ValueError("CMMLConfig.listwise_weight must be >= 0 and listwise_temperature > 0")
        if self.listwise_weight and self.head != "rating":
            raise ValueError(
                "CMMLConfig.listwise_weight applies to the rating head only (the ctr head is already pairwise)"
            )
        if self.catalog_weight < 0.0 or self.catalog_rating_weight < 0.0:
            raise ValueError("CMMLConfig.catalog_weight and catalog_rating_weight must be >= 0")
        if self.catalog_rating_weight and not self.catalog_weight:
            raise ValueError("CMMLConfig.catalog_rating_weight blends the relevance head's ranking: set catalog_weight")
        if self.catalog_negatives < 1 or self.catalog_dim < 1 or self.catalog_lr_multiplier <= 0:
            raise ValueError("CMMLConfig.catalog_negatives, catalog_dim and catalog_lr_multiplier must be positive")
        if self.catalog_weight and self.head == "ctr" and self.catalog_liked is not None and self.catalog_liked > 1.0:
            raise ValueError(
                f"CMMLConfig.catalog_liked = {self.catalog_liked}: ctr labels are 0/1, so no query row would be a "
                "positive; use 0.5"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CMMLConfig.dropout = {self.dropout} must be in [0, 1)")


def liked_threshold(config: CMMLConfig) -> float:
    """The label from which a query row is a positive of the catalog relevance head."""
    if config.catalog_liked is not None:
        return float(config.catalog_liked)
    return 4.0 if config.head == "rating" else 0.5


def as_tuple(values: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(values or ())
