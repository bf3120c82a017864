"""``cmml serve`` (the test double) and ``cmml predict`` (the clients).

``cmml.cli`` registers both with :func:`add_subcommands`; ``python -m cmml.serving.cli`` runs
them on their own. Flags of ``serve`` carry TF Serving's names so that a command line moves to
``tensorflow_model_server`` unchanged (``--port``, ``--rest_api_port``, ``--model_name``,
``--model_base_path``, ``--file_system_poll_wait_seconds`` ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any, Sequence

import numpy as np

from cmml.errors import CmmlError
from cmml.serving.ports import cpu_count

REST_DISABLED = 0  # TF Serving's convention: --rest_api_port=0 turns the REST API off
INT32_MAX = 2**31 - 1  # TF Serving's gRPC receive cap (server.cc: SetMaxMessageSize(kint32max))


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``serve`` and ``predict`` on a ``parser.add_subparsers()`` object. Each sets
    ``handler`` (a function of the parsed namespace returning an exit code) as its default."""
    serve = subparsers.add_parser(
        "serve",
        help="run the PredictionService TEST DOUBLE (gRPC + REST; not TensorFlow Serving)",
        description="Serves the newest numeric version under --model_base_path (or the models of --model_config_file) "
        "with TF Serving's gRPC and REST API. A test double for machines without tensorflow_model_server; production "
        "uses the official binary (BUILD.md). Flags are tensorflow_model_server's; docs/serving.md lists them.",
    )
    serve.add_argument(
        "--model_base_path",
        default="",
        help="absolute path of the folder of numeric version sub-folders: <base>/<model_name> "
        "(ignored with --model_config_file)",
    )
    serve.add_argument(
        "--model_name", default="default", help="name clients request (default: default; ignored with a config file)"
    )
    serve.add_argument(
        "--model_config_file",
        default="",
        help="text-format ModelServerConfig: several models, version policies, version labels",
    )
    serve.add_argument(
        "--allow_version_labels_for_unavailable_models",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="let version_labels in the config name versions that are not loaded (needed for labels at start-up)",
    )
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    serve.add_argument(
        "--rest_api_port", type=int, default=REST_DISABLED, help="REST port (default 0 = no REST API, as TF Serving)"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default loopback; not a TF Serving flag)"
    )
    serve.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1.0, help="version polling period; 0 = load once"
    )
    serve.add_argument(
        "--tensorflow_intra_op_parallelism", type=int, default=0, help="TF intra-op threads (0 = TF default)"
    )
    serve.add_argument(
        "--tensorflow_inter_op_parallelism", type=int, default=0, help="TF inter-op threads (0 = TF default)"
    )
    threads = 4 * cpu_count()  # server.h: 4.0 * port::NumSchedulableCPUs()
    serve.add_argument("--grpc_max_threads", type=int, default=threads, help=f"gRPC worker threads (default {threads})")
    serve.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=2000 (passed after the "
        "2 GiB - 1 receive cap, which gRPC keeps: use --max_request_bytes to lower it)",
    )
    serve.add_argument(
        "--rest_api_num_threads", type=int, default=threads, help=f"REST requests processed at once (default {threads})"
    )
    serve.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="deadline of a REST request's model run: past it 504 DEADLINE_EXCEEDED (<= 0: none)",
    )
    serve.add_argument(
        "--rest_api_enable_cors_support",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="add CORS headers to REST responses",
    )
    serve.add_argument(
        "--enable_batching",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="merge concurrent requests of a signature into one batch (TF Serving's BatchingSession)",
    )
    serve.add_argument(
        "--batching_parameters_file",
        default="",
        help="text-format BatchingParameters (max_batch_size, batch_timeout_micros, ...); needs --enable_batching",
    )
    serve.add_argument(
        "--max_request_bytes",
        type=int,
        default=INT32_MAX,
        help="largest gRPC message received (default 2 GiB - 1, fixed in TF Serving: a knob of the double for tests)",
    )
    serve.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(handler=_serve)

    predict = subparsers.add_parser(
        "predict",
        help="call a TF Serving model (or the test double) over gRPC or REST and rank the candidates",
        description="Sends a Predict request and prints ranked items with scores. Input: a :predict JSON body "
        "(--input), a user id and candidate items resolved from a dataset (--data --user --candidates), or the "
        "items a user rated (--items --ratings): the top of the whole catalog from the model's recommend signature "
        "(titles from --data when given).",
    )
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="gRPC target host:port (PredictionService)")
    where.add_argument("--rest_url", help="REST base URL, e.g. http://localhost:8501")
    predict.add_argument("--model_name", default="default", help="model name (default: default)")
    predict.add_argument(
        "--signature_name", default=None, help="signature (default: the body's signature_name, else serving_default)"
    )
    predict.add_argument("--version", type=int, default=None, help="a specific version (default: the latest)")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    predict.add_argument("--metadata", action="store_true", help="print the model's signatures and exit")
    predict.add_argument("--status", action="store_true", help="print the model's version status and exit")
    predict.add_argument(
        "--input", help='JSON file with a :predict body: {"signature_name": ..., "inputs"|"instances": ...}'
    )
    predict.add_argument("--data", help="dataset (name, folder or CSV log) to resolve --user and --candidates from")
    predict.add_argument("--columns", help="for a CSV log: field=column pairs")
    predict.add_argument("--delimiter", default=",", help="for a CSV log: field separator")
    predict.add_argument("--user_features", dest="users_path", help="for a CSV log: user side-feature file")
    predict.add_argument("--item_features", dest="items_path", help="for a CSV log: item side-feature file")
    predict.add_argument(
        "--user", help="user id: with --data, whose history is the support set; with --items, a known user of the model"
    )
    predict.add_argument("--candidates", help="comma-separated candidate item ids (the query set)")
    predict.add_argument(
        "--items", help="comma-separated item ids the user rated (support set): recommend from the whole catalog"
    )
    predict.add_argument("--ratings", help="with --items: their ratings, comma-separated, in the same order")
    predict.add_argument(
        "--user_attributes", help="with --items: a new user's raw attributes, e.g. gender=F,age=25 (default: unknown)"
    )
    predict.add_argument("--max_support", type=int, default=64, help="most recent interactions used as the support set")
    predict.add_argument(
        "--top", type=int, default=None, help="print only the top N items per task (with --items: N, default 10)"
    )
    predict.add_argument("--format", choices=["text", "json"], default="text")
    predict.set_defaults(handler=_predict)


# --- serve ------------------------------------------------------------------------------------------------------
def _flag_bool(text: str) -> bool:
    """A boolean flag as TensorFlow's flag parser reads it: ``--flag``, ``--flag=true|false|1|0``."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments`` as server.cc parses it: ``key=value`` pairs separated by commas, a value
    that parses as an int32 passed as an int, any other as a string."""
    out: list[tuple[str, int | str]] = []
    for item in text.split(",") if text else []:
        key, sep, value = item.partition("=")
        if not sep:  # TF Serving reads key_val[1] out of range here; say what is wrong instead
            raise ValueError(f"--grpc_channel_arguments takes key=value pairs, not {item!r}")
        try:
            number = int(value)
        except ValueError:
            out.append((key, value))
        else:
            out.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
    return out


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from cmml.serving.batching import server_batching
    from cmml.serving.config import STARTUP_EXIT_CODE, STARTUP_FAILURE, model_configs, server_config
    from cmml.serving.errors import Limits, ServingError, invalid

    try:
        # Server::BuildAndStart's checks, in its order (before TensorFlow is even imported); a refusal is
        # printed as main.cc prints it, on stdout, and the exit code is main's -1
        if args.port == 0:
            raise invalid("At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
        proto = server_config(args.model_name, args.model_base_path, args.model_config_file)
        batching = server_batching(args.enable_batching, args.batching_parameters_file)
        models = model_configs(proto, args.allow_version_labels_for_unavailable_models)
        channel_arguments = grpc_channel_arguments(args.grpc_channel_arguments)
        if args.model_config_file and args.model_base_path:
            logging.getLogger("cmml.serving.double").info(
                "--model_config_file is set: --model_name and --model_base_path are ignored (as in TF Serving)"
            )
        import tensorflow as tf  # cmml, imported as this module's package, has selected Keras 2

        from cmml.serving.server import ServingDouble

        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
        double = ServingDouble(
            None,
            limits=Limits(max_request_bytes=args.max_request_bytes),
            port=args.port,
            rest_api_port=None if args.rest_api_port == REST_DISABLED else args.rest_api_port,
            host=args.host,
            poll_seconds=args.file_system_poll_wait_seconds,
            grpc_max_threads=args.grpc_max_threads,
            rest_api_num_threads=args.rest_api_num_threads,
            rest_api_timeout_seconds=args.rest_api_timeout_in_ms / 1000.0,
            models=models,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            batching=batching,
            cors=args.rest_api_enable_cors_support,
            grpc_channel_arguments=channel_arguments,
        )
    except ServingError as exc:
        print(f"{STARTUP_FAILURE}{exc}", flush=True)
        return STARTUP_EXIT_CODE
    except ValueError as exc:
        print(f"cmml serve: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        double.start()
    except ServingError as exc:  # no version of a model loaded (ConnectSourcesWithFastInitialLoad)
        print(f"{STARTUP_FAILURE}{exc}", flush=True)
        return STARTUP_EXIT_CODE
    except OSError as exc:  # a port in use, an unreadable base path
        print(f"cmml serve: error: {exc}", file=sys.stderr)
        return 1
    print(double.ready_line(), flush=True)
    try:
        stop.wait()
    finally:
        logging.getLogger("cmml.serving.double").info("test double: shutting down")
        double.stop()
    return 0


# --- predict ----------------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace):
    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.rest_client import RestClient

    if args.server:
        return GrpcClient(args.server, args.model_name, timeout=args.timeout)
    return RestClient(args.rest_url, args.model_name, timeout=args.timeout)


def _inputs_from_file(path: str, signatures: dict, signature_name: str | None):
    from cmml.serving.json_codec import parse_predict_body
    from cmml.serving.signatures import DEFAULT_SIGNATURE, signature_or_error

    with open(path, encoding="utf-8") as f:
        try:
            body = json.load(f)
        except ValueError as exc:
            raise _UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _UsageError(f"{path}: expected a JSON object with 'inputs' or 'instances'")
    sig = signature_or_error(signatures, signature_name or body.get("signature_name") or DEFAULT_SIGNATURE)
    if signature_name and signature_name != body.get("signature_name", DEFAULT_SIGNATURE):
        body = _select_inputs(body, set(sig.inputs))
    inputs, row_format = parse_predict_body(body, sig.input_dtypes())
    return sig, inputs, row_format


def _select_inputs(body: dict, names: set[str]) -> dict:
    """The body restricted to the inputs of another signature: one request file (support + query)
    then also drives ``encode_context`` (support only)."""
    out = dict(body)
    if isinstance(body.get("inputs"), dict):
        out["inputs"] = {k: v for k, v in body["inputs"].items() if k in names}
    elif isinstance(body.get("instances"), list) and all(isinstance(r, dict) for r in body["instances"]):
        out["instances"] = [{k: v for k, v in r.items() if k in names} for r in body["instances"]]
    return out


def _inputs_from_dataset(args: argparse.Namespace, signatures: dict):
    from cmml.serving.signatures import DEFAULT_SIGNATURE, signature_or_error
    from cmml.serving.task_inputs import build_user_inputs

    if not (args.user and args.candidates):
        raise _UsageError("--data needs --user and --candidates")
    dataset = _dataset(args)
    sig = signature_or_error(signatures, args.signature_name or DEFAULT_SIGNATURE)
    candidates = [i.strip() for i in args.candidates.split(",") if i.strip()]
    try:
        inputs, task = build_user_inputs(dataset, sig, args.user, candidates, args.max_support)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return sig, inputs, task


class _UsageError(Exception):
    pass


def _dataset(args: argparse.Namespace):
    """The dataset of --data (with the CSV options)."""
    from cmml.data import open_dataset

    return open_dataset(
        args.data,
        columns=args.columns,
        delimiter=args.delimiter,
        users_path=args.users_path,
        items_path=args.items_path,
    )


RECOMMEND = "recommend"


def _inputs_from_items(args: argparse.Namespace, signatures: dict):
    """recommend's inputs for one task: the rated items, the user (known id or raw attributes), k."""
    from cmml.serving.tensors import numpy_dtype

    sig = signatures.get(RECOMMEND)
    if sig is None:
        raise _UsageError(
            f"--items needs the model's '{RECOMMEND}' signature (the pipeline's export with its item catalog); "
            f"the model has {sorted(signatures)}"
        )
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    try:
        ratings = [float(r) for r in (args.ratings or "").split(",") if r.strip()]
    except ValueError:
        raise _UsageError(f"--ratings must be numbers, not {args.ratings!r}") from None
    if len(ratings) != len(items):
        raise _UsageError(f"--items names {len(items)} item(s) but --ratings gives {len(ratings)} rating(s)")
    attributes = {}
    for pair in (args.user_attributes or "").split(","):
        if pair.strip():
            field, sep, value = pair.partition("=")
            if not sep:
                raise _UsageError(f"--user_attributes takes field=value pairs, not {pair!r}")
            attributes["user_" + field.strip()] = value.strip()
    unknown = sorted(set(attributes) - set(sig.inputs))
    if unknown:
        takes = sorted(n[len("user_") :] for n in sig.inputs if n.startswith("user_") and n != "user_id")
        raise _UsageError(f"the model takes no user attribute(s) {[u[5:] for u in unknown]}; it takes {takes}")
    inputs = {}
    for name, spec in sig.inputs.items():
        dtype = numpy_dtype(spec.dtype)
        if name == "support_item_id":
            inputs[name] = np.array([[i.encode() for i in items]], dtype=object)
        elif name == "support_label":
            inputs[name] = np.array([ratings], dtype=np.float32)
        elif name == "k":
            inputs[name] = np.array([args.top or 10], dtype=dtype)
        elif name == "user_id":
            inputs[name] = np.array([(args.user or "").encode()], dtype=object)
        elif dtype.kind == "O":  # a user attribute: the one given, else unknown
            inputs[name] = np.array([attributes.get(name, "").encode()], dtype=object)
        else:
            try:
                inputs[name] = np.array([attributes.get(name, 0)], dtype=dtype)
            except ValueError:
                raise _UsageError(f"user attribute {name[5:]} must be a number, not {attributes[name]!r}") from None
    return sig, inputs


def _print_recommendations(args, result, version, titles: dict[str, str]) -> None:
    item_ids = [x.decode("utf-8", "replace") for x in np.asarray(result.outputs["item_id"])[0]]
    scores = [float(x) for x in np.asarray(result.outputs["scores"])[0]]
    if args.format == "json":
        rows = [{"item": i, "title": titles.get(i), "score": s} for i, s in zip(item_ids, scores)]
        print(json.dumps({"model_version": version, "signature_name": RECOMMEND, "items": rows}, indent=1))
        return
    who = f"user {args.user}" if args.user else "a new user"
    print(f"model '{args.model_name}' version {version}: top {len(item_ids)} of the catalog for {who}")
    print(f"{'rank':>4}  {'item':<10} {'score':>8}  title")
    for k, (i, s) in enumerate(zip(item_ids, scores), 1):
        print(f"{k:>4}  {i:<10} {s:>8.4f}  {titles.get(i, '')}")


def _titles(args: argparse.Namespace) -> dict[str, str]:
    """Item id -> title from --data (empty without it, or when the items have no title)."""
    if not args.data:
        return {}
    items, _ = _dataset(args).read_items(on_error="collect")
    if "title" not in items.column_names:
        return {}
    return {i: t for i, t in zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()) if t}


def _predict(args: argparse.Namespace) -> int:
    from cmml.serving.errors import ServingError
    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.results import rank_items
    from cmml.serving.task_inputs import item_labels

    try:
        with _client(args) as client:
            if args.status:
                for s in client.status(args.version):
                    detail = f": {s.error_message}" if s.error_message else ""
                    print(f"version {s.version}: {s.state} ({s.error_code}{detail})")
                return 0
            version, signatures = client.metadata(args.version)
            if args.metadata:
                print(f"model '{args.model_name}' version {version}")
                for sig in signatures.values():
                    print(sig.describe())
                return 0
            task = None
            if args.items:
                sig, inputs = _inputs_from_items(args, signatures)
                result = client.predict(inputs, RECOMMEND, args.version)
                titles = _titles(args)
                _print_recommendations(args, result, result.version if result.version is not None else version, titles)
                return 0
            if args.input:
                sig, inputs, row_format = _inputs_from_file(args.input, signatures, args.signature_name)
            elif args.data:
                sig, inputs, task = _inputs_from_dataset(args, signatures)
                row_format = False
            else:
                raise _UsageError(
                    "give --input FILE.json, or --data with --user and --candidates (or --metadata / --status)"
                )
            if isinstance(client, GrpcClient):
                result = client.predict(inputs, sig.name, args.version)
            else:
                result = client.predict(inputs, sig.name, args.version, row_format=row_format)
    except _UsageError as exc:
        print(f"cmml predict: error: {exc}", file=sys.stderr)
        return 2
    except CmmlError as exc:  # dataset not found, unreadable data
        print(f"cmml predict: error: {exc}", file=sys.stderr)
        return 1
    except ServingError as exc:
        print(f"cmml predict: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    served = result.version if result.version is not None else version
    if "scores" not in result.outputs:
        _print_outputs(result.outputs, args.format, served, sig.name)
        return 0
    scores = np.asarray(result.outputs["scores"])
    labels = item_labels(inputs, task)
    mask = inputs.get("query_mask")
    rankings = []
    for t in range(scores.shape[0]):
        items = labels[t] if labels is not None else None
        rankings.append(rank_items(scores[t], items, None if mask is None else mask[t], args.top))
    if args.format == "json":
        print(
            json.dumps(
                {
                    "model_version": served,
                    "signature_name": sig.name,
                    "tasks": [[{"item": r.item, "score": r.score} for r in ranking] for ranking in rankings],
                },
                indent=1,
            )
        )
        return 0
    print(
        f"model '{args.model_name}' version {served}, signature '{sig.name}'"
        + (f", user {task.user_id} with {len(task.support_items)} support interaction(s)" if task else "")
    )
    for t, ranking in enumerate(rankings):
        if len(rankings) > 1:
            print(f"task {t}:")
        print(f"{'rank':>4}  {'item':<20} score")
        for k, r in enumerate(ranking, 1):
            print(f"{k:>4}  {str(r.item):<20} {r.score:.5f}")
    return 0


def _print_outputs(outputs: dict, fmt: str, version: Any, signature: str) -> None:
    from cmml.serving.json_codec import ndarray_to_json

    payload = {
        "model_version": version,
        "signature_name": signature,
        "outputs": {k: ndarray_to_json(np.asarray(v), k) for k, v in outputs.items()},
    }
    print(json.dumps(payload, indent=None if fmt == "text" else 1, allow_nan=True))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cmml.serving.cli serve|predict ...`` (the same sub-commands as ``cmml``)."""
    parser = argparse.ArgumentParser(
        prog="python -m cmml.serving.cli", description="CMML serving: test double and clients"
    )
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
