"""The serving check in a fresh interpreter: ``python fresh_process.py MODEL_DIR INPUTS.npz REPORT.json``.

Loads the SavedModel with plain TensorFlow where ``cmml`` cannot be imported (and Keras 2 is not
selected), so the export is shown to stand on its own, calls every signature on the canned
inputs and checks shapes, finiteness and that the signatures agree with each other (two-stage =
one call; ``update_context`` from an empty state = ``encode_context``; raw tf.Examples = the
scores; items and known users by id = their raw attributes; recommend = rank_items (relevance head)
or serving_default on its top). Writes ``{"signatures", "checks"}`` to the report and exits 0; on a
failed check or an error it adds ``"error"`` (TensorFlow's whole message), prints it to stderr and
exits 1.

Run by path, never imported: it must not import ``cmml`` (nor anything next to it).
"""

import json
import os
import sys

sys.modules["cmml"] = None  # an import of the package fails here, as on a serving host
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # the package's own modules must not be importable as top-level modules

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class CheckFailed(Exception):
    pass


def run_checks(model_dir: str, data: dict, report: dict) -> None:
    fns = tf.saved_model.load(model_dir).signatures
    report["signatures"] = sorted(fns.keys())
    b, q = data["query_mask"].shape
    mask = data["query_mask"]

    def spec(name):
        return fns[name].structured_input_signature[1]

    def call(name, **inputs):
        outputs = fns[name](**{k: tf.constant(v, spec(name)[k].dtype) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def check(ok, message):
        report["checks"].append(message)
        if not ok:
            raise CheckFailed(message)

    def same(a, b):
        return bool(np.allclose(a * mask, b * mask, atol=1e-4))

    given = {}  # inputs the canned episodes do not hold by name

    def inputs_of(name, **extra):
        """The signature's inputs from the canned raw episodes, by name: ``new_<f>`` = the whole support
        set, ``user_<f>`` = the first support row's value."""
        out = {}
        for k in spec(name):
            if k in extra or k in given:
                out[k] = extra[k] if k in extra else given[k]
            elif k in data:
                out[k] = data[k]
            elif k.startswith("new_") and "support_" + k[4:] in data:
                out[k] = data["support_" + k[4:]]
            elif k.startswith("user_") and "support_" + k[5:] in data:
                out[k] = data["support_" + k[5:]][:, 0]
            else:
                raise CheckFailed(f"no canned value for input '{k}' of signature '{name}'")
        return out

    by_id = "query_item_id" in spec("serving_default")
    if by_id and "user_id" in spec("serving_default"):  # each task's user, by id: the user of its first row
        first = tf.io.parse_example(
            data["support_examples"][:, 0], {"user_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
        )
        given["user_id"] = first["user_id"].numpy()
    scores = call("serving_default", **inputs_of("serving_default"))["scores"]
    check(scores.shape == (b, q), f"serving_default scores {scores.shape} for {b} tasks x {q} candidates")
    check(bool(np.isfinite(scores).all()), "serving_default scores are finite")
    if "serve_raw" in fns:
        raw = call("serve_raw", **inputs_of("serve_raw"))["scores"]
        check(same(scores, raw), "serving_default (items by id) equals serve_raw (raw attributes) on the same items")
        if "user_id" in given and "support_user_id" not in data:  # user_id is no model feature: the user table's key
            ids = inputs_of("serving_default")
            blank = {
                k: (np.full(v.shape, b"", object) if v.dtype.kind in "OS" else np.zeros_like(v))
                for k, v in ids.items()
                if k.startswith("user_") and k != "user_id"
            }
            alone = call("serving_default", **{**ids, **blank})["scores"]
            check(same(alone, raw), "serving_default: a known user by id alone equals the user's raw attributes")
            new_user = call("serving_default", **{**ids, "user_id": np.full(b, b"", object)})["scores"]
            check(same(new_user, raw), 'serving_default: a new user ("") with raw attributes equals serve_raw')
    if "encode_context" in fns:
        enc = call("encode_context", **inputs_of("encode_context"))
        two_stage = call("score", **inputs_of("score", context=enc["context"]))["scores"]
        check(same(two_stage, scores), "encode_context + score equals serving_default")
        upd = call("update_context", **inputs_of("update_context", state=np.zeros_like(enc["state"])))
        check(
            np.allclose(upd["context"], enc["context"], atol=1e-4),
            "update_context from an empty state equals encode_context",
        )
    if "recommend" in fns:
        k = 5
        top = call("recommend", **inputs_of("recommend", k=np.full(b, k, np.int32)))
        check(top["item_id"].shape == (b, k), f"recommend returns {top['item_id'].shape} items for {b} tasks, k={k}")
        # what recommend ranks by: rank_items with the catalog relevance head, the predicted rating without
        ranking = "rank_items" if "rank_items" in fns else "serving_default"
        again = call(ranking, **{**inputs_of(ranking), "query_item_id": top["item_id"]})["scores"]
        check(np.allclose(again, top["scores"], atol=1e-4), f"recommend's top items score as {ranking} scores them")
        check(bool(np.all(top["scores"][:, :-1] >= top["scores"][:, 1:] - 1e-6)), "recommend's scores are in order")
        support = [set(row) - {b""} for row in np.asarray(data["support_item_id"]).tolist()]
        check(
            all(not (set(row) & s) for row, s in zip(top["item_id"].tolist(), support)),
            "recommend leaves the support items out",
        )
    if "serve_tf_examples" in fns and "support_examples" in data:
        ex = call("serve_tf_examples", **{k: data[k] for k in ("support_examples", "query_examples")})["scores"]
        check(same(ex, scores), "serve_tf_examples equals serving_default on the same rows")


def main(argv: list) -> int:
    model_dir, inputs_path, report_path = argv[1:4]
    report = {"signatures": [], "checks": []}
    try:
        run_checks(model_dir, dict(np.load(inputs_path, allow_pickle=False)), report)
    except CheckFailed as exc:
        report["error"] = f"check failed: {exc}"
    except Exception as exc:  # TensorFlow's error, whole: its last lines name the node and the reason
        report["error"] = f"{type(exc).__name__}: {exc}"
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    if "error" in report:
        print(report["error"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
