"""Validation sweeps (``cmml sweep``): variants of one row of a suite, several seeds each, scored on meta_valid.

The users-v1 NDCG@3 target of the reference figures is missed by less than the seed-to-seed
spread. A sweep shows what the neighbours of the best row do, on the meta-train validation users
only: each variant of ``pipeline/configs/experiments/sweeps.yaml`` changes one setting of the row,
trains at every seed exactly as the experiment runner does (same TaskGen records, training block
and early stopping), and is scored on meta_valid. Test figures are neither computed nor written
here, so that a choice made from this table cannot have seen meta_test. Figures go to
``docs/results/<suite>-sweep.json`` and the section ``<suite>-sweep`` of RESULTS.md
(``cmml experiment --render`` re-renders it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cmml.experiments import results
from cmml.experiments.sections import BEGIN, END
from cmml.experiments.suites import (
    EXPERIMENTS_DIR,
    USER_COLUMNS,
    ExperimentError,
    ModelSpec,
    Suite,
    check_keys,
    metric_label,
)
from cmml.pipeline.config import read_yaml

SWEEPS_FILE = EXPERIMENTS_DIR / "sweeps.yaml"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # model config changes
    episodes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # training-episode changes (e.g. query_size)


@dataclasses.dataclass(frozen=True)
class Sweep:
    suite: str
    row: str  # the suite row whose configuration and training block the variants change
    variants: tuple[Variant, ...]
    note: str = ""


def load_sweeps(path: str | os.PathLike = SWEEPS_FILE) -> dict[str, Sweep]:
    """The sweeps of ``path`` by suite name."""
    sweeps = check_keys(read_yaml(path, ExperimentError), ("sweeps",), str(path), required=("sweeps",))["sweeps"]
    out = {}
    for suite, values in (sweeps or {}).items():
        where = f"{path}: sweeps.{suite}"
        spec = check_keys(values, ("row", "note", "variants"), where, required=("row", "variants"))
        variants = []
        for i, v in enumerate(spec["variants"] or ()):
            v = check_keys(v, ("name", "config", "episodes"), f"{where}.variants[{i}]", required=("name",))
            variants.append(Variant(str(v["name"]), dict(v.get("config") or {}), dict(v.get("episodes") or {})))
        out[str(suite)] = Sweep(str(suite), str(spec["row"]), tuple(variants), str(spec.get("note") or ""))
    return out


def sweep_row(sweep: Sweep, suite: Suite) -> ModelSpec:
    found = [m for m in suite.models if m.name == sweep.row]
    if not found:
        raise ExperimentError(f"suite {suite.name!r} has no row {sweep.row!r}")
    return found[0]


def run_sweep(
    sweep: Sweep,
    suite: Suite,
    seeds: Sequence[int],
    cache_dir: str,
    variants: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Trains every variant at every seed and scores it on meta_valid; returns the JSON-able record."""
    from cmml.experiments.data import Data, prepare_tasks
    from cmml.models.training import numpy_scorer, train

    spec = sweep_row(sweep, suite)
    chosen = [v for v in sweep.variants if not variants or any(s in v.name for s in variants)]
    if not chosen:
        raise ExperimentError(f"no variant matches {list(variants)}; variants: {[v.name for v in sweep.variants]}")
    root = prepare_tasks(suite, cache_dir, log)
    record = {
        "sweep": suite.name,
        "row": spec.name,
        "config": spec.config,
        "training": spec.training,
        "episodes": suite.episodes,
        "seeds": list(seeds),
        "note": sweep.note,
        "records": os.path.relpath(root, os.getcwd()),
        "commit": results.git_commit(),
        "date": results.now(),
        "runs": [],
    }
    start = time.time()
    for variant in chosen:
        data = Data(root, suite.setting, {**suite.episodes, **variant.episodes}, suite.rating_range)
        for seed in seeds:
            t = time.time()
            config = {**spec.config, **variant.config}
            trained = train(data, spec.kind, config, data.training_config(spec.training, seed), data.clip)
            fit = trained.summary
            valid = data.evaluate(numpy_scorer(trained.model), batches=data.valid.as_numpy_iterator())
            record["runs"].append(
                {
                    "variant": variant.name,
                    "seed": seed,
                    "best_epoch": fit["best_epoch"],
                    "epochs_run": fit["epochs_run"],
                    "valid": valid,
                    "seconds": time.time() - t,
                }
            )
            log(
                f"[sweep {suite.name}] {variant.name}, seed {seed}: validation MAE {valid['mae']:.4f}, "
                f"NDCG@3 {valid['ndcg@3']:.4f} (best epoch {fit['best_epoch']}, {time.time() - t:.0f} s)"
            )
    record["wall_seconds"] = time.time() - start
    return record


def render_sweep(record: Mapping[str, Any]) -> str:
    """The RESULTS.md section of a sweep record: mean ± std over seeds of the meta_valid figures."""
    name = f"{record['sweep']}-sweep"
    order = list(dict.fromkeys(r["variant"] for r in record["runs"]))
    lines = [
        BEGIN.format(name),
        f'## Validation sweep around "{record["row"]}" ({record["sweep"]})',
        "",
        f"Command: `{record.get('command', 'cmml sweep')}`  ",
        f"Run {record.get('date', '?')}, commit {record.get('commit', '?')}, "
        f"{record.get('wall_seconds', 0) / 60:.0f} min; seeds {', '.join(str(s) for s in record['seeds'])}.",
        "",
        record.get("note", ""),
        "",
        "Every figure is from the **meta_valid** users (none from meta_test): mean ± sample std over seeds. "
        "Each variant changes the listed setting of the row and trains as it does (training block, early stopping on "
        "validation MAE).",
        "",
        "| variant | " + " | ".join(metric_label(m) for m in USER_COLUMNS) + " | best epoch (mean) | runs |",
        "|---" * (len(USER_COLUMNS) + 3) + "|",
    ]
    for variant in order:
        runs = [r for r in record["runs"] if r["variant"] == variant]
        cells = []
        for m in USER_COLUMNS:
            values = np.array([r["valid"][m] for r in runs])
            cells.append(f"{values.mean():.4f}" + (f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""))
        lines.append(
            f"| {variant} | " + " | ".join(cells) + f" | {np.mean([r['best_epoch'] for r in runs]):.1f} | {len(runs)} |"
        )
    reference = [r for r in record["runs"] if r["variant"] == order[0]]
    if len(reference) > 1:
        spread = np.std([r["valid"]["ndcg@3"] for r in reference], ddof=1)
        lines += [
            "",
            f"Seed-to-seed spread of validation NDCG@3 for the first row: {spread:.4f} (sample std). A variant whose "
            f"mean differs from the first row's by less than about {2 * spread / np.sqrt(len(reference)):.4f} (two "
            "standard errors of a mean over these seeds) is not distinguishable from it here.",
        ]
    lines.append(END.format(name))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    from cmml.experiments.cli import sweep_main

    sys.exit(sweep_main())
