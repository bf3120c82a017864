"""The serving check in a fresh interpreter: ``python fresh_process.py MODEL_DIR INPUTS.npz REPORT.json``.

Loads the SavedModel with plain TensorFlow where ``cmml`` cannot be imported (and Keras 2 is not
selected), so the export is shown to stand on its own, calls every signature on the canned
inputs and checks shapes, finiteness and that the signatures agree with each other (two-stage =
one call; ``update_context`` from an empty state = ``encode_context``; raw tf.Examples = raw
tensors; items by id = their raw attributes). Writes ``{"signatures", "checks"}`` to the report and
exits 0; on a failed check or an error it adds ``"error"`` (TensorFlow's whole message), prints it
to stderr and exits 1.

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

    def call(name, **inputs):
        spec = fns[name].structured_input_signature[1]
        outputs = fns[name](**{k: tf.constant(v, spec[k].dtype) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def check(ok, message):
        report["checks"].append(message)
        if not ok:
            raise CheckFailed(message)

    def pick(prefix):
        return {k: v for k, v in data.items() if k.startswith(prefix) and not k.endswith("_examples")}

    scores = call("serving_default", **pick("support_"), **pick("query_"))["scores"]
    b, q = data["query_mask"].shape
    check(scores.shape == (b, q), f"serving_default scores {scores.shape} for {b} tasks x {q} candidates")
    check(bool(np.isfinite(scores).all()), "serving_default scores are finite")
    if "encode_context" in fns:
        enc = call("encode_context", **pick("support_"))
        two_stage = call("score", context=enc["context"], **pick("query_"))["scores"]
        check(np.allclose(two_stage, scores, atol=1e-4), "encode_context + score equals serving_default")
        new = {"new_" + k[len("support_") :]: v for k, v in pick("support_").items()}
        upd = call("update_context", state=np.zeros_like(enc["state"]), **new)
        check(
            np.allclose(upd["context"], enc["context"], atol=1e-4),
            "update_context from an empty state equals encode_context",
        )
    if "serve_ids" in fns:
        ids = {}
        by_catalog = "user_id" not in data and "support_user_id" not in data  # user_id = a user catalog key
        for name in fns["serve_ids"].structured_input_signature[1]:
            if name in ("support_item_id", "support_label", "query_item_id"):
                ids[name] = data[name]
            elif name == "user_id" and by_catalog:  # the task's user: the one of its first support row
                first = tf.io.parse_example(
                    data["support_examples"][:, 0], {"user_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
                )
                ids[name] = first["user_id"].numpy()
            else:  # the task's user attribute user_<field>
                ids[name] = data["support_" + (name if name == "user_id" else name[len("user_") :])][:, 0]
        by_id = call("serve_ids", **ids)["scores"]
        mask = data["query_mask"]
        check(np.allclose(by_id * mask, scores * mask, atol=1e-4), "serve_ids equals serving_default on the same items")
        if by_catalog and "user_id" in ids:  # a known user named by id alone: attributes from the user catalog
            blank = {
                k: (np.full(v.shape, b"", object) if v.dtype.kind in "OS" else np.zeros_like(v))
                for k, v in ids.items()
                if k.startswith("user_") and k != "user_id"
            }
            by_user_id = call("serve_ids", **{**ids, **blank})["scores"]
            check(
                np.allclose(by_user_id * mask, scores * mask, atol=1e-4),
                "serve_ids: a known user by id alone equals the user's raw attributes",
            )
    if "recommend" in fns and "serve_ids" in fns:
        k = 5
        top = call("recommend", **{n: v for n, v in ids.items() if n != "query_item_id"}, k=np.int32(k))
        check(top["item_id"].shape == (b, k), f"recommend returns {top['item_id'].shape} items for {b} tasks, k={k}")
        again = call("serve_ids", **{**ids, "query_item_id": top["item_id"]})["scores"]
        check(np.allclose(again, top["scores"], atol=1e-4), "recommend's top items score as serve_ids scores them")
        check(bool(np.all(top["scores"][:, :-1] >= top["scores"][:, 1:] - 1e-6)), "recommend's scores are in order")
        support = [set(row) - {b""} for row in np.asarray(ids["support_item_id"]).tolist()]
        check(
            all(not (set(row) & s) for row, s in zip(top["item_id"].tolist(), support)),
            "recommend leaves the support items out",
        )
    if "serve_tf_examples" in fns and "support_examples" in data:
        examples = {k: data[k] for k in ("support_examples", "query_examples")}
        ex = call("serve_tf_examples", **examples)["scores"]
        mask = data["query_mask"]
        check(
            np.allclose(ex * mask, scores * mask, atol=1e-4),
            "serve_tf_examples equals serving_default on the same rows",
        )


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
