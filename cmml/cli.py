"""The ``cmml`` command line. Sub-commands import their heavy dependencies lazily so that
``cmml --help`` and the data commands start in well under a second."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

import cmml
from cmml.errors import CmmlError

Handler = Callable[[argparse.Namespace], int]


def _add_dataset_args(p: argparse.ArgumentParser, default: str | None = "synthetic") -> None:
    p.add_argument(
        "--data",
        default=default,
        required=default is None,
        help="dataset: synthetic | ml-100k | ml-1m | ml-1m-partial | ml-20m | a dataset folder | a CSV log file"
        + (f" (default: {default})" if default else ""),
    )
    p.add_argument(
        "--columns", help="for a CSV log: field=column pairs, e.g. user=uid,item=iid,label=rating,timestamp=ts"
    )
    p.add_argument("--delimiter", default=",", help="for a CSV log: field separator (default ',')")
    p.add_argument(
        "--label-range",
        type=_label_range,
        help="for a CSV log: accepted label range LO,HI (e.g. 1,5); labels outside it are rejected rows",
    )
    p.add_argument("--users", dest="users_path", help="for a CSV log: user side-feature file (canonical column names)")
    p.add_argument("--items", dest="items_path", help="for a CSV log: item side-feature file (canonical column names)")


def _label_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 1,5), got {text!r}") from None
    if not lo <= hi:
        raise argparse.ArgumentTypeError(f"LO must not exceed HI, got {text!r}")
    return lo, hi


def _open(args: argparse.Namespace):
    from cmml.data import open_dataset

    return open_dataset(
        args.data,
        columns=args.columns,
        delimiter=args.delimiter,
        label_range=args.label_range,
        users_path=args.users_path,
        items_path=args.items_path,
    )


# --- cmml data ... -------------------------------------------------------------------------------------
def _data_fetch(args: argparse.Namespace) -> int:
    from cmml.data import data_home
    from cmml.data.fetch import fetch

    fetch(args.name, args.dest or data_home(), timeout=args.timeout)
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from cmml.data import synthetic

    kw = {"seed": args.seed, "themes": args.themes, "groups": args.groups, "items": args.items}
    if args.ratings:
        cfg = synthetic.SyntheticConfig.for_ratings(args.ratings, **kw)
    else:
        cfg = synthetic.SyntheticConfig(users=args.num_users, **kw)
    synthetic.generate(args.dest, cfg)
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from cmml.data.inspect import inspect_dataset

    print(inspect_dataset(_open(args), max_rejects=args.show_rejects))
    return 0


# --- cmml run / runs ---------------------------------------------------------------------------------------
DEFAULT_OUTPUT = "runs"


def _pipeline_config(args: argparse.Namespace):
    """The pipeline config of ``run`` / ``refresh-catalog`` and its output folder."""
    from cmml.pipeline.config import load_config

    overrides = {}
    if args.data:
        overrides["data"] = args.data
    if args.setting:
        overrides["setting"] = args.setting
    if args.columns:
        overrides["columns"] = args.columns
    config = load_config(args.config, overrides)
    return config, args.output or f"{DEFAULT_OUTPUT}/{config.name}-{config.setting}"


def _run(args: argparse.Namespace) -> int:
    config, output = _pipeline_config(args)
    if args.runner == "kubeflow":
        from cmml.pipeline.runner import compile_kubeflow

        path = compile_kubeflow(config, args.pipeline_root or output, args.kubeflow_output, args.image)
        print(f"compiled the Kubeflow Pipelines V2 spec: {path} (submit it with the KFP client or Vertex AI Pipelines)")
        return 0
    from cmml.pipeline.runner import run_local

    print(
        f"running pipeline {config.name!r} ({config.setting} setting) on {', '.join(map(str, config.data))}; "
        f"outputs in {output}",
        file=sys.stderr,
    )
    summary = run_local(config, output, enable_cache=not args.no_cache, verbose=args.verbose)
    print(summary.render())
    return 0


def _refresh_catalog(args: argparse.Namespace) -> int:
    from cmml.pipeline.catalog_refresh import refresh_catalog

    config, output = _pipeline_config(args)
    report = refresh_catalog(config, output, log=lambda m: print(m, file=sys.stderr))
    print(report.render())
    return 0


def _runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cmml.pipeline.runs import list_runs

    roots = [Path(args.output)] if args.output else sorted(p for p in Path(DEFAULT_OUTPUT).glob("*") if p.is_dir())
    rows = [dict(r, output=str(root)) for root in roots for r in list_runs(str(root))]
    if not rows:
        print(f"no runs recorded under {args.output or DEFAULT_OUTPUT}/")
        return 0
    print(f"{'started':19s}  {'pipeline':24s}  {'executions':>10s}  {'cached':>6s}  {'failed':>6s}  output")
    for r in sorted(rows, key=lambda r: r["started"], reverse=True):
        print(
            f"{r['started']:19s}  {str(r['pipeline']):24s}  {r['executions']:10d}  {r['cached']:6d}  "
            f"{r['failed']:6d}  {r['output']}"
        )
    return 0


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        action="append",
        help="dataset: synthetic | ml-100k | ml-1m | ml-1m-partial | ml-20m | a folder | a CSV log; "
        "repeat for multi-domain (default: from the config, synthetic)",
    )
    p.add_argument(
        "--setting",
        choices=("user", "scenario", "multi-domain"),
        help="cold-start setting (default: from the config, user)",
    )
    p.add_argument("--config", help="YAML file merged over pipeline/configs/default.yaml")
    p.add_argument(
        "--columns", help="for a CSV log: field=column pairs, e.g. user=uid,item=iid,label=rating,timestamp=ts"
    )
    p.add_argument(
        "--output",
        help=f"output folder (pipeline root, ML-Metadata, pushed models); default {DEFAULT_OUTPUT}/<name>-<setting>",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmml",
        description="CMML cold-start recommendation: data, TFX pipeline, serving and experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the TFX pipeline end to end (default: user setting on the synthetic data)")
    _add_pipeline_args(run)
    run.add_argument(
        "--verbose", action="store_true", help="show TFX's and Beam's INFO logs, not just one line per component"
    )
    run.add_argument(
        "--no-cache", action="store_true", help="re-run every component even when its inputs are unchanged"
    )
    run.add_argument(
        "--runner",
        choices=("local", "kubeflow"),
        default="local",
        help="local: run now (LocalDagRunner); kubeflow: compile a KFP V2 spec",
    )
    run.add_argument(
        "--image",
        default="gcr.io/your-project/cmml-tfx:latest",
        help="kubeflow: container image with this package installed",
    )
    run.add_argument("--pipeline-root", help="kubeflow: shared pipeline root (gs://...)")
    run.add_argument(
        "--kubeflow-output", default="cmml_pipeline.json", help="kubeflow: where to write the pipeline spec"
    )
    run.set_defaults(handler=_run)

    refresh = sub.add_parser(
        "refresh-catalog",
        help="rebuild the pushed model's item table from the data's item file and push it as a new version",
        description="Catalog refresh without retraining: the item files of --data (read as the pipeline reads them) "
        "go through the run's tf.Transform graph into the served model's item table; the same weights, user table and "
        "warm-up records are exported as a new version under the run's serving base path, which TF Serving (or "
        "`cmml serve`) loads on its next poll. Items missing from the new file keep their previous row.",
    )
    _add_pipeline_args(refresh)
    refresh.set_defaults(handler=_refresh_catalog)

    runs = sub.add_parser("runs", help="list past pipeline runs recorded in ML-Metadata")
    runs.add_argument("--output", help=f"a run's output folder (default: every folder under {DEFAULT_OUTPUT}/)")
    runs.set_defaults(handler=_runs)

    data = sub.add_parser("data", help="fetch, generate and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    fetch = data_sub.add_parser("fetch", help="download an official MovieLens archive and verify its checksum")
    fetch.add_argument("name", help="ml-100k | ml-1m | ml-20m")
    fetch.add_argument(
        "--dest",
        help="folder to unpack into (default: $CMML_DATA_DIR or ~/.cache/cmml/data, where `--data NAME` looks)",
    )
    fetch.add_argument("--timeout", type=float, default=20.0, help="network timeout in seconds")
    fetch.set_defaults(handler=_data_fetch)
    synth = data_sub.add_parser(
        "synth", help="generate synthetic MovieLens-format logs with planted cold-start structure"
    )
    synth.add_argument("--dest", required=True, help="output folder")
    size = synth.add_mutually_exclusive_group()
    size.add_argument("--ratings", type=int, help="about this many ratings (sets the number of users)")
    size.add_argument("--num-users", type=int, default=3000, help="number of users (default 3000)")
    synth.add_argument(
        "--items", type=int, help="catalog size (default: grows with the number of users, at most 60,000)"
    )
    synth.add_argument("--themes", type=int, default=24, help="number of item themes / scenarios")
    synth.add_argument("--groups", type=int, default=8, help="number of latent user preference groups")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_data_synth)
    inspect = data_sub.add_parser("inspect", help="read a dataset and report counts and rejected rows")
    _add_dataset_args(inspect, default=None)
    inspect.add_argument("--show-rejects", type=int, default=10, help="how many rejected rows to print")
    inspect.set_defaults(handler=_data_inspect)
    data.set_defaults(handler=lambda a: (data.print_help(), 2)[1])

    from cmml.experiments.cli import add_subcommands as add_experiments

    add_experiments(sub)  # experiment, sweep, interpret

    from cmml.serving.cli import add_subcommands as add_serving

    add_serving(sub)  # serve, predict
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if getattr(args, "verbose", False) and not cmml.TF_LOG_LEVEL_CHOSEN_BY_USER:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # before TensorFlow is imported: its C++ logs too
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except CmmlError as exc:
        print(f"cmml: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cmml: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
