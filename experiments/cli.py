"""Command line of the experiments: ``cmml experiment``, ``cmml sweep`` and ``cmml interpret``.

    cmml experiment --suite users-v1 [--seeds 5] [--out RESULTS.md]   # one suite of suites.yaml
    cmml experiment --suite all                                        # every suite, in the file's order
    cmml experiment --render                      # re-render RESULTS.md from docs/results/*.json
    cmml sweep [--suite users-v1] [--seeds 3] [--variants "τ = 0.5" ...]
    cmml interpret [--out docs] [--parts users,scenario,routes]
    cmml full-catalog [--suite users-v1 ml-100k-users] [--seeds 5] [--resume]   # whole-catalog Recall/NDCG

The argument definitions import nothing beyond the standard library, so that ``cmml --help`` stays
fast; each handler imports the modules that do the work. ``python -m cmml.experiments.run``,
``python -m cmml.experiments.render``, ``python -m cmml.experiments.sweep``, ``python -m
cmml.experiments.interpret`` and ``python -m cmml.experiments.full_catalog`` run the same commands on their own.

Cost: on 2 CPU cores shared with other jobs, one users-v1 run of CMML takes 1-2 min (~6-9 s an
epoch after a ~25 s first epoch of tracing), DCN ~1.5 min, MeLU-5 ~3 min, MetaCS-DNN-5 ~8 min; the
section "Compute budget" of RESULTS.md lists the measured times of every suite and the estimate of
a 5-seed regeneration (several hours for ``--suite all``: ``--seeds``, ``--models`` and
``--max-epochs`` make smaller runs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

PARTS = ("users", "scenario", "routes")
DATA_ROOT_HELP = (
    "folder holding the datasets (ml-1m-partial/, ml-100k/); default: $CMML_SHARED_DATA, else where "
    "`cmml data fetch` puts them ($CMML_DATA_DIR or ~/.cache/cmml/data)"
)


def _say(line: str) -> None:
    print(line, flush=True)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``experiment``, ``sweep``, ``interpret`` and ``full-catalog``; each sets ``handler`` as its default."""
    experiment = subparsers.add_parser(
        "experiment", help="the paper's tables on real data: 5 seeds, mean ± std, into RESULTS.md"
    )
    add_experiment_arguments(experiment)
    experiment.set_defaults(handler=experiment_command)
    sweep = subparsers.add_parser(
        "sweep", help="variants of the best users-v1 row, several seeds, scored on meta_valid only, into RESULTS.md"
    )
    add_sweep_arguments(sweep)
    sweep.set_defaults(handler=sweep_command)
    interpret = subparsers.add_parser(
        "interpret", help="t-SNE of task contexts and Soft-M route heat maps (PNGs in docs/)"
    )
    add_interpret_arguments(interpret)
    interpret.set_defaults(handler=interpret_command)
    full_catalog = subparsers.add_parser(
        "full-catalog",
        help="cold users' Recall/NDCG@10,20 over the whole item catalog (CMML, DCN, floors, EASE, ALS) into RESULTS.md",
    )
    add_full_catalog_arguments(full_catalog)
    full_catalog.set_defaults(handler=full_catalog_command)


# --- cmml experiment --------------------------------------------------------------------------------------------
def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        nargs="+",
        default=["users-v1"],
        help="suites of pipeline/configs/experiments/suites.yaml to run (default users-v1); 'all' runs every suite "
        "in the file's order",
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument(
        "--out",
        default="RESULTS.md",
        help="results file; only the run suites' sections are rewritten (default RESULTS.md)",
    )
    parser.add_argument(
        "--json-dir", default="docs/results", help="per-seed figures, <suite>.json (default docs/results)"
    )
    parser.add_argument(
        "--cache-dir",
        default="runs/experiments",
        help="TFX data pipeline outputs, reused across runs (default runs/experiments)",
    )
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    parser.add_argument(
        "--targets",
        metavar="FILE",
        help="reference figures file (markdown: official-code figures, quality targets, the users-v1 check value); "
        "without it the official-figures table and the protocol check are skipped",
    )
    parser.add_argument("--models", nargs="*", default=[], help="only models whose name contains one of these strings")
    parser.add_argument("--max-epochs", type=int, help="cap every model's training epochs (quick runs)")
    parser.add_argument("--patience", type=int, help="override the early-stopping patience")
    parser.add_argument(
        "--resume", action="store_true", help="keep the per-seed results already in the JSON files for unchanged models"
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="train every row, even one another suite already trained on the same records",
    )
    parser.add_argument("--render", action="store_true", help="only re-render the results file from the JSON files")
    parser.add_argument("--verbose", action="store_true", help="print every training epoch")


def experiment_command(args: argparse.Namespace) -> int:
    import time

    from cmml.experiments.suites import SUITES_FILE, ExperimentError, check_data, load_suites

    if args.render:
        from cmml.experiments.render import render_all

        done = render_all(args.json_dir, args.out)
        print(f"re-rendered {', '.join(done) or 'nothing'} in {args.out}")
        return 0
    definitions = load_suites(args.data_root)
    names = list(definitions) if "all" in args.suite else list(dict.fromkeys(args.suite))
    unknown = [n for n in names if n not in definitions]
    if unknown:
        raise ExperimentError(f"unknown suite(s) {', '.join(unknown)}; {SUITES_FILE} has {', '.join(definitions)}")
    for name in names:  # every dataset first: `--suite all` runs for hours
        check_data(definitions[name])
    from cmml.experiments.run import Options, run_suite

    opts = Options(
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        cache_dir=args.cache_dir,
        json_dir=args.json_dir,
        out=args.out,
        targets=args.targets,
        models=args.models,
        max_epochs=args.max_epochs,
        patience=args.patience,
        resume=args.resume,
        no_reuse=args.no_reuse,
        command=getattr(args, "command_line", None) or shlex.join(["cmml", "experiment"] + sys.argv[2:]),
        training_log=args.verbose,
        log=_say,
    )
    start = time.time()
    for name in names:
        run_suite(definitions[name], opts)
    print(f"done: {', '.join(names)} in {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


# --- cmml sweep --------------------------------------------------------------------------------------------------
def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="users-v1", help="the suite whose row is swept (a sweep of sweeps.yaml; default users-v1)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. n-1 (default 3)")
    parser.add_argument("--variants", nargs="*", default=(), help="substrings selecting variants (default: all)")
    parser.add_argument(
        "--cache-dir", default="runs/experiments", help="TFX data pipeline outputs, shared with `cmml experiment`"
    )
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    parser.add_argument(
        "--json-dir", default="docs/results", help="where <suite>-sweep.json goes (default docs/results)"
    )
    parser.add_argument(
        "--out", default="RESULTS.md", help="results file; only the sweep's section is rewritten (default RESULTS.md)"
    )


def sweep_command(args: argparse.Namespace) -> int:
    from cmml.experiments import results
    from cmml.experiments.sections import write_section
    from cmml.experiments.suites import ExperimentError, load_suites
    from cmml.experiments.sweep import SWEEPS_FILE, load_sweeps, render_sweep, run_sweep

    sweeps = load_sweeps()
    if args.suite not in sweeps:
        raise ExperimentError(f"no sweep for suite {args.suite!r}; {SWEEPS_FILE} has {', '.join(sweeps)}")
    command = getattr(args, "command_line", None) or shlex.join(["cmml", "sweep"] + sys.argv[2:])
    suite = load_suites(args.data_root)[args.suite]
    record = run_sweep(sweeps[args.suite], suite, list(range(args.seeds)), args.cache_dir, args.variants, log=_say)
    record["command"] = command
    results.write_json(Path(args.json_dir) / f"{args.suite}-sweep.json", record)
    section = render_sweep(record)
    write_section(args.out, f"{args.suite}-sweep", section)
    print(section)
    return 0


# --- cmml interpret ----------------------------------------------------------------------------------------------
def add_interpret_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs", help="folder for the PNGs and interpret.json (default: docs)")
    parser.add_argument(
        "--work",
        default="runs/interpret",
        help="folder for generated data and pipeline outputs (default: runs/interpret)",
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default: all)"
    )
    parser.add_argument("--users", type=int, default=3000, help="synthetic users (default 3000)")
    parser.add_argument(
        "--scenario-data",
        help="MovieLens folder for the scenario figure (default: ml-100k/ under the data root: $CMML_SHARED_DATA, "
        "else where `cmml data fetch` puts it)",
    )
    parser.add_argument("--epochs", type=int, default=12, help="user setting: maximum training epochs (default 12)")
    parser.add_argument(
        "--scenario-epochs", type=int, default=20, help="scenario setting: maximum training epochs (default 20)"
    )
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    parser.add_argument(
        "--soft-hybrid",
        choices=("none", "dot", "mlp"),
        default="dot",
        help="hybrid context of the Soft-M model (default dot: routes per query pair, averaged over a task's query "
        "rows; none: one route per task)",
    )
    parser.add_argument(
        "--beam-workers", type=int, default=1, help="DirectRunner workers of the data path (default 1: in-memory)"
    )
    parser.add_argument("--seed", type=int, default=0)


def interpret_command(args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"interpret: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    from cmml.experiments.interpret.studies import run_studies

    return run_studies(args, parts)


# --- cmml full-catalog ------------------------------------------------------------------------------------------
def add_full_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        nargs="+",
        default=["users-v1"],
        help="user suites of suites.yaml whose records are ranked (default users-v1)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. n-1 of the trained models and ALS (default 5)")
    parser.add_argument(
        "--models",
        nargs="*",
        default=[],
        help="only rows whose name contains one of these strings (default: all); with --resume they are rerun and "
        "the other rows keep their figures",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the results already in the JSON file (rows already done are skipped)",
    )
    parser.add_argument(
        "--no-listwise", action="store_true", help="skip the CMML variant with the listwise ranking term"
    )
    parser.add_argument(
        "--no-recommend-check", action="store_true", help="skip the comparison with the exported recommend signature"
    )
    parser.add_argument("--max-epochs", type=int, help="cap the trained models' epochs (quick runs only)")
    parser.add_argument(
        "--cache-dir", default="runs/experiments", help="TFX data pipeline outputs, shared with `cmml experiment`"
    )
    parser.add_argument(
        "--reuse-records",
        action="store_true",
        help="read the newest TaskGen output under --cache-dir instead of re-running the data pipeline",
    )
    parser.add_argument("--data-root", help=DATA_ROOT_HELP)
    parser.add_argument(
        "--json-dir", default="docs/results", help="where full-catalog.json goes (default docs/results)"
    )
    parser.add_argument(
        "--out",
        default="RESULTS.md",
        help="results file; only its full-catalog section is rewritten (default RESULTS.md)",
    )


def full_catalog_command(args: argparse.Namespace) -> int:
    import time

    from cmml.experiments.full_catalog import Options, run

    opts = Options(
        seeds=list(range(args.seeds)),
        cache_dir=args.cache_dir,
        json_dir=args.json_dir,
        out=args.out,
        models=args.models,
        resume=args.resume,
        listwise=not args.no_listwise,
        check_recommend=not args.no_recommend_check,
        reuse_records=args.reuse_records,
        max_epochs=args.max_epochs,
        command=getattr(args, "command_line", None) or shlex.join(["cmml", "full-catalog"] + sys.argv[2:]),
        log=_say,
    )
    start = time.time()
    run(list(dict.fromkeys(args.suite)), opts, args.data_root)
    print(f"done in {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


# --- python -m cmml.experiments.<module> ---------------------------------------------------------------------------
def _main(
    module: str,
    add: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    from cmml.errors import CmmlError

    prog = f"python -m {module}"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", module] + argv)
    try:
        return handler(args)
    except CmmlError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def experiment_main(argv: Sequence[str] | None = None) -> int:
    return _main("cmml.experiments.run", add_experiment_arguments, experiment_command, argv)


def render_main(argv: Sequence[str] | None = None) -> int:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json-dir", default="docs/results", help="the results files (default docs/results)")
        parser.add_argument("--out", default="RESULTS.md", help="the results file to re-render (default RESULTS.md)")
        parser.add_argument("--render", action="store_true", default=True, help="re-render (the only action here)")

    return _main("cmml.experiments.render", add, experiment_command, argv)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    return _main("cmml.experiments.sweep", add_sweep_arguments, sweep_command, argv)


def interpret_main(argv: Sequence[str] | None = None) -> int:
    return _main("cmml.experiments.interpret", add_interpret_arguments, interpret_command, argv)


def full_catalog_main(argv: Sequence[str] | None = None) -> int:
    return _main("cmml.experiments.full_catalog", add_full_catalog_arguments, full_catalog_command, argv)
