"""Validation sweep (issue 7): variants of one row of a suite, several seeds each, scored on meta_valid.

    cmml sweep [--suite users-v1] [--seeds 3] [--variants "τ = 0.5" ...]     (or python -m cmml.experiments.sweep)

The users-v1 NDCG@3 target of ../shared/TARGETS.md is missed by less than the seed-to-seed spread.
This command shows what the neighbours of the best row do, on the meta-train validation users only:
each variant changes one setting of the row ``SWEEPS[suite].row``, trains at every seed exactly as
the experiment runner does (same TaskGen records, training block and early stopping), and is scored
on meta_valid. Test figures are neither computed nor written here, so that a choice made from this
table cannot have seen meta_test. Figures go to ``docs/results/<suite>-sweep.json`` and the section
``<suite>-sweep`` of RESULTS.md (``python -m cmml.experiments.runner --render`` re-renders it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cmml.experiments import runner as X


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


SWEEPS = {
    "users-v1": Sweep(
        "users-v1",
        "CMML FiLM + listwise loss, users-v1.yaml training",
        (
            Variant("as in RESULTS.md (w = 1, τ = 1)"),
            Variant("τ = 0.5", {"listwise_temperature": 0.5}),
            Variant("τ = 0.25", {"listwise_temperature": 0.25}),
            Variant("τ = 2", {"listwise_temperature": 2.0}),
            Variant("w = 3, τ = 0.5", {"listwise_weight": 3.0, "listwise_temperature": 0.5}),
            Variant("embedding size 32", {"embedding_dim": 32}),
            Variant("dropout 0.1", {"dropout": 0.1}),
            Variant("20 query ratings per training task", episodes={"query_size": 20}),
        ),
        note="Neighbours of the best users-v1 row, for the NDCG@3 target: the listwise term's temperature and weight "
        "(a smaller τ puts the target distribution on each user's top-rated items, which NDCG@3 scores), a wider "
        "embedding, dropout in the scoring network, and longer query lists during training (test tasks keep 10).",
    ),
}


def sweep_row(sweep: Sweep, suite: X.Suite) -> X.ModelSpec:
    found = [m for m in suite.models if m.name == sweep.row]
    if not found:
        raise X.ExperimentError(f"suite {suite.name!r} has no row {sweep.row!r}")
    return found[0]


def run_sweep(
    sweep: Sweep,
    suite: X.Suite,
    seeds: Sequence[int],
    cache_dir: str,
    variants: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Trains every variant at every seed and scores it on meta_valid; returns the JSON-able record."""
    spec = sweep_row(sweep, suite)
    chosen = [v for v in sweep.variants if not variants or any(s in v.name for s in variants)]
    if not chosen:
        raise X.ExperimentError(f"no variant matches {list(variants)}; variants: {[v.name for v in sweep.variants]}")
    root = X.prepare_tasks(suite, cache_dir, log)
    record = {
        "sweep": suite.name,
        "row": spec.name,
        "config": spec.config,
        "training": spec.training,
        "episodes": suite.episodes,
        "seeds": list(seeds),
        "note": sweep.note,
        "records": os.path.relpath(root, os.getcwd()),
        "commit": X._git_commit(),
        "date": X._now(),
        "runs": [],
    }
    start = time.time()
    for variant in chosen:
        data = X.Data(root, suite.setting, {**suite.episodes, **variant.episodes})
        for seed in seeds:
            t = time.time()
            model, _, fit = X.train_model(spec.kind, {**spec.config, **variant.config}, spec.training, data, seed)
            valid = data.evaluate(X._numpy_scorer(model), batches=data.valid.as_numpy_iterator())
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
                f"[sweep {suite.name}] {variant.name}, seed {seed}: validation MAE {valid['mae']:.4f}, NDCG@3 {valid['ndcg@3']:.4f} "
                f"(best epoch {fit['best_epoch']}, {time.time() - t:.0f} s)"
            )
    record["wall_seconds"] = time.time() - start
    return record


def render(record: Mapping[str, Any]) -> str:
    """The RESULTS.md section of a sweep record: mean ± std over seeds of the meta_valid figures."""
    name = f"{record['sweep']}-sweep"
    order = list(dict.fromkeys(r["variant"] for r in record["runs"]))
    lines = [
        X.BEGIN.format(name),
        f'## Validation sweep around "{record["row"]}" ({record["sweep"]})',
        "",
        f"Command: `{record.get('command', 'python -m cmml.experiments.sweep')}`  ",
        f"Run {record.get('date', '?')}, commit {record.get('commit', '?')}, {record.get('wall_seconds', 0) / 60:.0f} min; "
        f"seeds {', '.join(str(s) for s in record['seeds'])}.",
        "",
        record.get("note", ""),
        "",
        "Every figure is from the **meta_valid** users (none from meta_test): mean ± sample std over seeds. Each variant "
        "changes the listed setting of the row and trains as it does (training block, early stopping on validation MAE).",
        "",
        "| variant | " + " | ".join(X._label(m) for m in X.USER_COLUMNS) + " | best epoch (mean) | runs |",
        "|---" * (len(X.USER_COLUMNS) + 3) + "|",
    ]
    for variant in order:
        runs = [r for r in record["runs"] if r["variant"] == variant]
        cells = []
        for m in X.USER_COLUMNS:
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
            f"Seed-to-seed spread of validation NDCG@3 for the first row: {spread:.4f} (sample std). A variant whose mean "
            f"differs from the first row's by less than about {2 * spread / np.sqrt(len(reference)):.4f} (two standard errors of "
            "a mean over these seeds) is not distinguishable from it here.",
        ]
    lines.append(X.END.format(name))
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="users-v1", choices=sorted(SWEEPS), help="the suite whose row is swept (default users-v1)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. n-1 (default 3)")
    parser.add_argument("--variants", nargs="*", default=(), help="substrings selecting variants (default: all)")
    parser.add_argument(
        "--cache-dir", default="runs/experiments", help="TFX data pipeline outputs, shared with `cmml experiment`"
    )
    parser.add_argument(
        "--data-root",
        default=str(X.DEFAULT_DATA_ROOT),
        help="folder with ml-1m-partial/ and ml-100k/ (default ../shared/data)",
    )
    parser.add_argument(
        "--json-dir", default="docs/results", help="where <suite>-sweep.json goes (default docs/results)"
    )
    parser.add_argument(
        "--out", default="RESULTS.md", help="results file; only the sweep's section is rewritten (default RESULTS.md)"
    )


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "command_line", None) or shlex.join(["cmml", "sweep"] + sys.argv[2:])
    try:
        record = run_sweep(
            SWEEPS[args.suite],
            X.suites(args.data_root)[args.suite],
            list(range(args.seeds)),
            args.cache_dir,
            args.variants,
            log=lambda line: print(line, flush=True),
        )
    except X.ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record["command"] = command
    X._write_json(Path(args.json_dir) / f"{args.suite}-sweep.json", record)
    section = render(record)
    X.write_section(args.out, f"{args.suite}-sweep", section)
    print(section)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmml.experiments.sweep", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "cmml.experiments.sweep"] + argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
