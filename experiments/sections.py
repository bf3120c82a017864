"""The results file (RESULTS.md) as marked sections: each run rewrites its own section only.

A section sits between ``<!-- experiments:<name> begin -->`` and ``<!-- experiments:<name> end -->``;
text outside the markers (the header, notes added by hand) is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

BEGIN, END = "<!-- experiments:{} begin -->", "<!-- experiments:{} end -->"
# order of the sections in the results file (a section not listed goes last)
SECTION_ORDER = ("users-v1", "users-v1-sweep", "ml-100k-users", "scenario", "multi-domain", "ablations", "budget")
FILE_HEADER = """# Results

Tables of the paper (CMML, CIKM 2021) reproduced with this project's code on real MovieLens data.
Every figure below is written by `cmml experiment` (suites in `pipeline/configs/experiments/suites.yaml`);
nothing is typed in by hand. Each section says the exact command that produced it; per-seed
figures are in `docs/results/<suite>.json`. Regenerate everything with
`cmml experiment --suite all` (re-render from the JSON files only with `cmml experiment --render`).
Figures labelled "from TARGETS.md" are external reference figures (the paper authors' official code
run on this machine type with the same protocol), quoted from the reference file given with `--targets`.
The efficiency study (paper Fig. 2: time and memory of CMML against MeLU with 1/5/10/20 steps) is in
BENCHMARKS.md, section "Efficiency study" (`python -m bench.efficiency`, which also writes
`docs/efficiency.png`). The interpretability figures are `docs/tsne_user_contexts.png`,
`docs/tsne_scenario_contexts.png` and `docs/soft_routes.png`, with their figures in
`docs/interpret.json` (`cmml interpret`).
"""


def write_section(path: str | os.PathLike, name: str, section: str) -> None:
    """Replaces (or inserts, in SECTION_ORDER) section ``name`` of the results file; everything else stays as it is."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else FILE_HEADER
    begin, end = BEGIN.format(name), END.format(name)
    section = section if section.endswith("\n") else section + "\n"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        if b < len(text) and text[b] == "\n":
            b += 1
        text = text[:a] + section + text[b:]
    else:
        rank = {s: i for i, s in enumerate(SECTION_ORDER)}
        later = [s for s in SECTION_ORDER if rank[s] > rank.get(name, len(SECTION_ORDER)) and BEGIN.format(s) in text]
        if later:
            a = text.index(BEGIN.format(later[0]))
            text = text[:a] + section + "\n" + text[a:]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
