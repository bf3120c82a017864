"""Curated TFMD schemas of the canonical records, and (from the data components) the task records.

``interaction.pbtxt``, ``user.pbtxt`` and ``item.pbtxt`` describe the records every reader
produces (:mod:`cmml.data.records` holds the same layouts as Arrow schemas; a test keeps them in
sync). They are what TFDV validates against.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
RECORD_SCHEMAS = ("interaction", "user", "item")


def schema_path(name: str) -> Path:
    path = SCHEMA_DIR / f"{name}.pbtxt"
    if not path.is_file():
        raise FileNotFoundError(f"no schema named {name!r} in {SCHEMA_DIR}")
    return path


def load_schema(name: str):
    """The TFMD ``Schema`` proto stored as ``schemas/<name>.pbtxt``."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    return text_format.Parse(schema_path(name).read_text(encoding="utf-8"), schema_pb2.Schema())
