"""The curated TFMD schemas describe exactly the canonical Arrow records the readers produce."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cmml.data import records as R
from cmml.schemas import load_schema


@pytest.mark.parametrize(
    "name, arrow", [("interaction", R.INTERACTION_SCHEMA), ("user", R.USER_SCHEMA), ("item", R.ITEM_SCHEMA)]
)
def test_tfmd_schema_matches_arrow_schema(name, arrow):
    from tensorflow_metadata.proto.v0 import schema_pb2

    proto = load_schema(name)
    assert [f.name for f in proto.feature] == arrow.names
    for feature in proto.feature:
        field = arrow.field(feature.name)
        base = field.type.value_type if pa.types.is_list(field.type) else field.type
        expected = (
            schema_pb2.INT
            if pa.types.is_integer(base)
            else schema_pb2.FLOAT
            if pa.types.is_floating(base)
            else schema_pb2.BYTES
        )
        assert feature.type == expected, feature.name
        required = feature.presence.min_fraction == 1.0
        assert required == (not field.nullable), feature.name


def test_unknown_schema_name():
    with pytest.raises(FileNotFoundError, match="no schema named 'nope'"):
        load_schema("nope")


def test_entity_schema_holds_every_side_feature():
    """LogExampleGen's entity examples carry every side feature (the item's free-text title aside) once,
    typed as in the record schemas."""
    from cmml.components.example_gen.entities import INTERACTIONS, ITEM_FEATURES

    entity = {f.name: f for f in load_schema("entity").feature}
    assert list(entity) == [R.USER_ID, R.ITEM_ID, INTERACTIONS, *R.USER_FEATURES, *ITEM_FEATURES]
    records = {f.name: f for f in [*load_schema("user").feature, *load_schema("item").feature]}
    for name in [*R.USER_FEATURES, *ITEM_FEATURES]:
        assert entity[name].type == records[name].type, name
    assert entity[R.USER_ID].presence.min_fraction == 0.0 and entity[INTERACTIONS].presence.min_fraction == 1.0
