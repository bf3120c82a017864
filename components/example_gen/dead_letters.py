"""Malformed rows and row accounting: dead-letter records (``dead_letter/rejected-*.jsonl``) and
``ingest_stats.json`` (rows in / ok / rejected by kind, examples per split, join coverage)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cmml.components import common
from cmml.components.example_gen.sources import Source
from cmml.data import records as R

DEAD_LETTER_DIR = "dead_letter"
DEAD_LETTER_PREFIX = "rejected"
STATS_FILE = "ingest_stats.json"


def reject_record(source: Source, reject: R.RejectedRow) -> str:
    """One dead-letter record (a JSON line): source, file, line, kind, reason and the raw text."""
    return json.dumps(
        {
            "source": source.label(),
            "file": reject.path,
            "line": reject.line,
            "kind": R.reason_kind(reject.reason),
            "reason": reject.reason,
            "text": reject.text,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def finalize_stats(uri: str) -> dict:
    """Completes ``ingest_stats.json`` with totals and checks the row accounting."""
    path = os.path.join(uri, STATS_FILE)
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    stats.setdefault("rejected_by_kind", {})
    stats.setdefault("examples_by_split", dict.fromkeys(stats.get("splits", []), 0))
    stats["rows_rejected"] = int(sum(stats["rejected_by_kind"].values()))
    stats["rows_in"] = int(stats.get("rows_ok", 0) + stats["rows_rejected"])
    written = int(sum(stats["examples_by_split"].values()))
    if written != stats.get("rows_ok", 0):
        raise RuntimeError(
            f"LogExampleGen row accounting failed: {stats.get('rows_ok', 0)} rows parsed "
            f"but {written} examples written ({path})"
        )
    common.write_json(path, stats)
    return stats


def read_dead_letters(examples_uri: str) -> list[dict]:
    """All dead-letter records of an examples artifact, sorted by (file, line)."""
    folder = Path(examples_uri) / DEAD_LETTER_DIR
    out = []
    for p in sorted(folder.glob(f"{DEAD_LETTER_PREFIX}*.jsonl")):
        out += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(out, key=lambda d: (d["file"], d["line"]))
