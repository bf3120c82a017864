"""ExampleValidator's anomalies per split -> one readable line per problem, and the gate's summary."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from tensorflow_metadata.proto.v0 import anomalies_pb2

ANOMALIES_FILE = "SchemaDiff.pb"


def load_anomalies(anomalies_uri: str, split: str) -> anomalies_pb2.Anomalies:
    path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
    proto = anomalies_pb2.Anomalies()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def anomaly_lines(anomalies_by_split: Dict[str, anomalies_pb2.Anomalies], ignore: Sequence[str] = ()) -> List[dict]:
    """One entry per (split, feature, reason): split, feature, anomaly type, short description, details."""
    out = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        infos = sorted(anomalies.anomaly_info.items())
        if anomalies.HasField("dataset_anomaly_info"):
            infos.append(("(dataset)", anomalies.dataset_anomaly_info))
        for feature, info in infos:
            if feature in ignore:
                continue
            reasons = list(info.reason) or [info]
            for r in reasons:
                kind = anomalies_pb2.AnomalyInfo.Type.Name(r.type) if hasattr(r, "type") and r.type else "UNKNOWN_TYPE"
                out.append(
                    {
                        "split": split,
                        "feature": feature,
                        "type": kind,
                        "short": r.short_description or info.short_description,
                        "details": r.description,
                    }
                )
    return out


def summarize(problems: Sequence[dict], rejected: dict | None = None) -> str:
    if not problems:
        return "Data validation passed: no anomalies."
    lines = [f"Data validation failed: {len(problems)} problem{'s' if len(problems) != 1 else ''}."]
    for p in problems:
        where = f"split '{p['split']}', feature '{p['feature']}'" if p.get("split") else p["feature"]
        lines.append(f"  {where}: {p['short']}. {p['details']}".rstrip())
    if rejected and rejected.get("rows_rejected"):
        where = rejected.get("dead_letter_uri", "")
        lines.append(f"  {rejected['rows_rejected']:,} malformed rows are in the dead-letter output {where}")
    return "\n".join(lines)
