"""The ``cmml`` command line. Sub-commands import their heavy dependencies lazily so that
``cmml --help`` and the data commands start in well under a second."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from cmml.errors import CmmlError

Handler = Callable[[argparse.Namespace], int]


def _add_dataset_args(p: argparse.ArgumentParser, default: str | None = "synthetic") -> None:
    p.add_argument(
        "--data",
        default=default,
        required=default is None,
        help="dataset: synthetic | ml-100k | ml-1m | ml-1m-partial | ml-20m | a dataset folder | a CSV log file "
        f"(default: {default})",
    )
    p.add_argument("--columns", help="for a CSV log: field=column pairs, e.g. user=uid,item=iid,label=rating,timestamp=ts")
    p.add_argument("--delimiter", default=",", help="for a CSV log: field separator (default ',')")
    p.add_argument("--users", dest="users_path", help="for a CSV log: user side-feature file (canonical column names)")
    p.add_argument("--items", dest="items_path", help="for a CSV log: item side-feature file (canonical column names)")


def _open(args: argparse.Namespace):
    from cmml.data import open_dataset

    return open_dataset(args.data, columns=args.columns, delimiter=args.delimiter, users_path=args.users_path, items_path=args.items_path)


# --- cmml data ... -------------------------------------------------------------------------------------
def _data_fetch(args: argparse.Namespace) -> int:
    from cmml.data.fetch import fetch

    fetch(args.name, args.dest, timeout=args.timeout)
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from cmml.data import synthetic

    kw = {"seed": args.seed, "themes": args.themes, "groups": args.groups}
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


# --- cmml run -------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from cmml.data.inspect import inspect_dataset

    print(inspect_dataset(_open(args), max_rejects=10))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmml",
        description="CMML cold-start recommendation: data, TFX pipeline, serving and experiments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the main job end to end (default: on the synthetic data)")
    _add_dataset_args(run)
    run.set_defaults(handler=_run)

    data = sub.add_parser("data", help="fetch, generate and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    fetch = data_sub.add_parser("fetch", help="download an official MovieLens archive and verify its checksum")
    fetch.add_argument("name", help="ml-100k | ml-1m | ml-20m")
    fetch.add_argument("--dest", required=True, help="folder to unpack into")
    fetch.add_argument("--timeout", type=float, default=20.0, help="network timeout in seconds")
    fetch.set_defaults(handler=_data_fetch)
    synth = data_sub.add_parser("synth", help="generate synthetic MovieLens-format logs with planted cold-start structure")
    synth.add_argument("--dest", required=True, help="output folder")
    size = synth.add_mutually_exclusive_group()
    size.add_argument("--ratings", type=int, help="about this many ratings (sets the number of users)")
    size.add_argument("--num-users", type=int, default=3000, help="number of users (default 3000)")
    synth.add_argument("--themes", type=int, default=24, help="number of item themes / scenarios")
    synth.add_argument("--groups", type=int, default=8, help="number of latent user preference groups")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_data_synth)
    inspect = data_sub.add_parser("inspect", help="read a dataset and report counts and rejected rows")
    _add_dataset_args(inspect, default=None)
    inspect.add_argument("--show-rejects", type=int, default=10, help="how many rejected rows to print")
    inspect.set_defaults(handler=_data_inspect)
    data.set_defaults(handler=lambda a: (data.print_help(), 2)[1])

    from cmml.serving.cli import add_subcommands as add_serving

    add_serving(sub)  # serve, predict
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
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
