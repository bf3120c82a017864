"""What LogExampleGen reads: :class:`Source` (one dataset), and the component's JSON "query" that
names the sources and fingerprints their files (:func:`make_query` / :func:`parse_query`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

QUERY_VERSION = 1
DEFAULT_BLOCK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset to ingest.

    Attributes:
      data: a dataset name, a dataset folder, or a delimited log file (see ``cmml.data.open_dataset``).
      name: domain name. When set, user ids, item ids and scenarios are prefixed with ``<name>:``
        and every example carries a ``domain`` feature, so that several datasets can be
        concatenated with disjoint id spaces (multi-domain tasks).
      columns / delimiter / label_range / users_path / items_path: for a CSV log (column mapping,
        field separator, accepted label range, side-feature files).
    """

    data: str
    name: str | None = None
    columns: str | dict | None = None
    delimiter: str = ","
    label_range: tuple[float, float] | None = None
    users_path: str | None = None
    items_path: str | None = None

    def open(self):
        from cmml.data import open_dataset

        label_range = tuple(self.label_range) if self.label_range is not None else None
        return open_dataset(
            self.data,
            columns=self.columns,
            delimiter=self.delimiter,
            label_range=label_range,
            users_path=self.users_path,
            items_path=self.items_path,
            progress=sys.stderr,  # says so when the synthetic data set is generated on first use
        )

    def label(self) -> str:
        return self.name or str(self.data)


def make_query(sources: Sequence[Source], block_bytes: int = DEFAULT_BLOCK_BYTES) -> str:
    """The JSON "query" of the component: what to read, plus a fingerprint of the input files.

    The fingerprint (sizes and modification times) is part of the execution properties, so TFX's
    cache is invalidated when the data on disk changes.
    """
    if not sources:
        raise ValueError("LogExampleGen needs at least one source")
    names = [s.name for s in sources]
    if len(sources) > 1 and (any(n is None for n in names) or len(set(names)) != len(names)):
        raise ValueError(f"several sources need distinct names (domains) to keep their ids apart, got {names}")
    fingerprint = []
    resolved = []
    for s in sources:
        ds = s.open()  # resolves names such as 'synthetic' to folders and fails early on bad paths
        data = str(getattr(ds, "log_path", ds.root))
        resolved.append(dataclasses.replace(s, data=data))
        files = [p for p, _ in ds.interaction_sources()]
        files += [Path(p) for p in (s.users_path, s.items_path) if p]
        if ds.root.is_dir() and not hasattr(ds, "log_path"):
            files += [p for p in sorted(ds.root.iterdir()) if p.is_file()]
        for p in sorted(set(files)):
            st = p.stat()
            fingerprint.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    payload = {
        "version": QUERY_VERSION,
        "sources": [dataclasses.asdict(s) for s in resolved],
        "block_bytes": int(block_bytes),
        "fingerprint": hashlib.sha256("\n".join(fingerprint).encode()).hexdigest(),
    }
    return json.dumps(payload, sort_keys=True)


def parse_query(text: str) -> tuple[list[Source], int]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"LogExampleGen input pattern is not the JSON made by make_query: {exc}") from None
    sources = []
    for d in payload["sources"]:
        if d.get("label_range") is not None:
            d["label_range"] = tuple(d["label_range"])
        sources.append(Source(**d))
    return sources, int(payload.get("block_bytes", DEFAULT_BLOCK_BYTES))
