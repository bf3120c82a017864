"""Efficiency study (paper Fig. 2): CMML versus gradient meta-learning in the same framework.

    python -m bench.efficiency [--support 64 --query 100 --batch 32 --rounds 5 --calls 6 --pairs 40]
                               [--plot docs/efficiency.png]

Methods: CMML (default GRU encoder + dot hybrid + FiLM, the mean-encoder variant, and mean encoder +
hybrid none, whose modulation is computed once per task) versus MeLU
(MAML on the fully connected layers) with 1/5/10/20 inner steps, first and second order, and
MetaCS-DNN (MAML on the whole network, 5 steps, second order). Tasks use the feature set of the
ML-1M protocol (``bench.model_latency.BENCH_SPECS``), embedding size 32 and the 64-64-64
backbone on both sides; every function is compiled with ``tf.function``.

* **Time** (one process, all methods): training = one Adam step on a meta-batch of ``--batch``
  tasks; inference = adapt + score, per task, in batches of ``--batch`` tasks and one task per
  call. Methods are measured in interleaved rounds (each round times every method in turn), so
  load from other processes drifts over all methods alike; the table gives the median and the
  minimum over all timed calls. MAML inference is the same computation for both orders and is
  measured once per step count. Rounds last seconds, and the machine drifts within a run (runs of the
  same code on a quiet machine gave MeLU-20 medians up to 23 % apart), so the inference targets are also measured as
  **paired ratios**: ``--pairs`` times, one MeLU-5 or MeLU-20 call between two blocks of CMML calls
  of about the same duration; the table gives the median and quartiles of the per-pair ratios.
* **Memory** (a fresh process per method and mode, so one method's high-water mark cannot leak
  into another's): peak resident set size (VmHWM), its increase over the resident size just
  before the first compiled call ("Δ": graph building and execution, TensorFlow, model and data
  already loaded), and the working memory of one call: the TensorFlow allocator's peak bytes
  during the call above those held before it (``tf.config.experimental.get_memory_info``):
  activations, the tape and gradients, without the weights, optimizer slots and inputs.

Prints the markdown table and the ratios against the targets (CMML at least 3x faster than 5-step and
10x faster than 20-step MAML per task in batches of 32), and writes the plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

RESULT = "RESULT "
MiB = 1024.0 * 1024.0


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    family: str  # 'cmml' or 'maml'
    build: Callable[[], object]  # () -> model; imports TensorFlow lazily (the parent process never does)
    infer_as: str | None = None  # inference identical to another method's (MAML of either order)


def _build(kind: str, **config) -> Callable[[], object]:
    """() -> the model, built by the training API (``cmml.models.training.build_model``) on the bench features."""

    def build():
        from bench.model_latency import BENCH_SPECS
        from cmml.models.training import build_model

        return build_model(kind, BENCH_SPECS, "user", config)

    return build


def methods() -> list[Method]:
    out = [
        Method("CMML (GRU + dot + FiLM)", "cmml", _build("cmml")),
        Method("CMML (mean + dot + FiLM)", "cmml", _build("cmml", encoder="mean")),
        # hybrid 'none': FiLM's γ, β computed once per task and broadcast over the query rows
        Method("CMML (mean + none + FiLM)", "cmml", _build("cmml", encoder="mean", hybrid="none")),
    ]
    for k in (1, 5, 10, 20):
        out.append(Method(f"MeLU-{k} (1st order)", "maml", _build("maml", adapt="fc", inner_steps=k, first_order=True)))
        out.append(
            Method(
                f"MeLU-{k} (2nd order)",
                "maml",
                _build("maml", adapt="fc", inner_steps=k, first_order=False),
                infer_as=f"MeLU-{k} (1st order)",
            )
        )
    out.append(
        Method("MetaCS-DNN-5 (2nd order)", "maml", _build("maml", adapt="all", inner_steps=5, first_order=False))
    )
    return out


# --- measurement (runs in worker processes; imports TensorFlow) --------------------------------------------
class _Prepared:
    """A built model with its compiled training step and inference function, and the episodes."""

    def __init__(self, method: Method, support: int, query: int, batch: int):
        import tensorflow as tf

        import cmml  # noqa: F401
        from bench.model_latency import BENCH_SPECS
        from cmml.models.testing import random_episodes

        def episodes(tasks: int, with_label: bool) -> dict:
            raw = random_episodes(BENCH_SPECS, tasks=tasks, support=support, query=query, ragged=False, seed=tasks)
            return {k: tf.constant(v) for k, v in raw.items() if with_label or k != "query_label"}

        tf.keras.utils.set_random_seed(0)
        self.method, self.batch = method, batch
        self.model = model = method.build()
        self.train_data = episodes(batch, True)
        self.infer_data = {1: episodes(1, False), batch: episodes(batch, False)}
        model(self.infer_data[1])  # creates the variables
        optimizer = tf.keras.optimizers.Adam(1e-4)

        # autograph=False: both sides use static Python control flow only; skipping the conversion
        # shortens the first call without changing the graph
        @tf.function(autograph=False)
        def step(features):
            with tf.GradientTape() as tape:
                loss = model.compute_loss(features, training=True)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        forward = model.adapt_and_score if method.family == "maml" else (lambda f: model(f, training=False))
        self._step, self._infer = step, tf.function(forward, autograph=False)

    def train(self) -> None:
        self._step(self.train_data).numpy()

    def infer(self, tasks: int) -> None:
        self._infer(self.infer_data[tasks]).numpy()


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = float(line.split()[1]) / 1024.0
    return values["VmRSS"], values["VmHWM"]


# TensorFlow keeps CPU allocator statistics only with its BFC allocator, which oneDNN turns on by
# default on some Intel CPUs and not on others (AMD EPYC): the study asks for it explicitly, so that
# it measures the same allocator on every machine.
ALLOCATOR_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
ALLOCATOR = "TensorFlow's BFC CPU allocator (TF_CPU_ALLOCATOR_USE_BFC=true)"


def use_measured_allocator() -> None:
    """Selects the allocator whose statistics the study reads; must run before TensorFlow is imported."""
    if "tensorflow" in sys.modules and os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") != "true":
        raise RuntimeError(
            "TensorFlow is already imported without TF_CPU_ALLOCATOR_USE_BFC=true: the efficiency study's "
            "memory figures need that allocator; set the variable before importing TensorFlow"
        )
    os.environ.update(ALLOCATOR_ENV)


def _working_memory_mb(fn: Callable[[], None]) -> float:
    """Peak bytes TensorFlow's CPU allocator holds while ``fn`` runs *above* what it held before, in MiB:
    the call's working memory (activations, the tape, gradients), without the weights, optimizer slots
    and inputs that exist anyway (and without whatever else the process keeps alive)."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except ValueError as exc:  # no statistics: another allocator than BFC is active
        raise RuntimeError(
            f"TensorFlow's CPU allocator keeps no statistics in this process ({exc}); "
            "set TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow is imported"
        ) from None
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    fn()
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / MiB


def measure_memory(method: Method, mode: str, support: int, query: int, batch: int) -> dict:
    """Memory of one method and mode ('train' | 'infer'); meant for a fresh process."""
    p = _Prepared(method, support, query, batch)
    rss_before, _ = _rss_mb()
    t0 = time.perf_counter()
    if mode == "train":
        p.train()
        out = {"train_first_call_s": time.perf_counter() - t0}
        for _ in range(3):
            p.train()
        out["train_work_mb"] = _working_memory_mb(p.train)
    else:
        p.infer(1)
        out = {"infer_first_call_s": time.perf_counter() - t0}
        for _ in range(3):
            p.infer(1)
            p.infer(batch)
        out["infer_work_mb"] = _working_memory_mb(lambda: p.infer(batch))
    _, peak = _rss_mb()
    out.update({f"{mode}_rss_before_mb": rss_before, f"{mode}_peak_mb": peak, f"{mode}_delta_mb": peak - rss_before})
    return out


# the inference targets; CMML is also timed against these in paired blocks
PAIRED_AGAINST = ("MeLU-5 (1st order)", "MeLU-20 (1st order)")


def _block_seconds(fn: Callable[[], None], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def paired_ratio(fast: Callable[[], None], slow: Callable[[], None], pairs: int, block: int) -> dict:
    """Speed-up of ``fast`` over ``slow`` from adjacent blocks: per pair, one ``slow`` call against the
    mean of ``block`` ``fast`` calls just before and just after it. Drift of the machine (clock, other
    tenants) hits both sides of every pair alike, which a ratio of two separately taken medians does not
    guarantee. Returns the median, quartiles and size of the per-pair ratios."""
    values = []
    for _ in range(pairs):
        before = _block_seconds(fast, block)
        slow_s = _block_seconds(slow, 1)
        after = _block_seconds(fast, block)
        values.append(slow_s / ((before + after) / 2.0))
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "pairs": pairs, "block": block}


def measure_times(
    selected: list[Method], support: int, query: int, batch: int, rounds: int, calls: int, pairs: int = 40
) -> dict[str, dict]:
    """Interleaved timing of every method in one process: ``{name: {field: ms}}``; then, for every CMML
    method, paired ratios against the methods of ``PAIRED_AGAINST`` that are selected (``pairs`` pairs
    in batches of ``batch`` tasks; field ``paired_b{batch}``: ``{method: paired_ratio(...)}``)."""
    prepared = [_Prepared(m, support, query, batch) for m in selected]
    jobs = []  # (method name, field, function, calls per round, tasks per call)
    for p in prepared:
        jobs.append((p.method.name, "train_ms", p.train, max(1, calls // 2), 1))
        if p.method.infer_as is None or p.method.infer_as not in {m.name for m in selected}:
            jobs.append((p.method.name, f"infer_ms_per_task_b{batch}", lambda p=p: p.infer(batch), calls, batch))
            jobs.append((p.method.name, "infer_ms_per_task_b1", lambda p=p: p.infer(1), 4 * calls, 1))
    for _, _, fn, _, _ in jobs:  # trace, then warm up
        for _ in range(3):
            fn()
    samples: dict[tuple[str, str], list[float]] = {(name, field): [] for name, field, _, _, _ in jobs}
    for _ in range(rounds):
        for name, field, fn, n, tasks in jobs:
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                samples[(name, field)].append((time.perf_counter() - t0) * 1e3 / tasks)
    out: dict[str, dict] = {m.name: {} for m in selected}
    for (name, field), values in samples.items():
        out[name][field] = float(np.median(values))
        out[name][field + "_min"] = float(np.min(values))
    by_name = {p.method.name: p for p in prepared}
    field = f"infer_ms_per_task_b{batch}"
    for c in (p for p in prepared if p.method.family == "cmml"):
        paired = {}
        for other in (n for n in PAIRED_AGAINST if n in by_name):
            # blocks of about equal duration on both sides of a pair
            block = max(1, round(out[other][field] / out[c.method.name][field]))
            paired[other] = paired_ratio(
                lambda c=c: c.infer(batch), lambda o=by_name[other]: o.infer(batch), pairs, block
            )
        if paired:
            out[c.method.name][f"paired_b{batch}"] = paired
    return out


# --- orchestration (parent process: no TensorFlow) ---------------------------------------------------------
def _worker(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.efficiency",
        "--support",
        str(args.support),
        "--query",
        str(args.query),
        "--batch",
        str(args.batch),
        "--rounds",
        str(args.rounds),
        "--calls",
        str(args.calls),
        "--pairs",
        str(args.pairs),
        *extra,
    ]
    env = {**os.environ, **ALLOCATOR_ENV, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def run(args: argparse.Namespace, selected: list[Method] | None = None, in_process: bool = False) -> list[dict]:
    """Memory per method and mode (fresh processes unless ``in_process``), then the interleaved timing."""
    selected = selected or methods()
    names = {m.name for m in selected}
    rows = []
    for m in selected:
        row = {"method": m.name, "family": m.family}
        shared = m.infer_as if m.infer_as in names else None
        for mode in ("train",) if shared else ("train", "infer"):
            if in_process:
                row.update(measure_memory(m, mode, args.support, args.query, args.batch))
            else:
                row.update(_worker(args, "--worker", "memory", "--method", m.name, "--mode", mode))
        if shared:
            row["infer_shared_with"] = shared
        rows.append(row)
        print(
            f"memory: {m.name:28s} training peak RSS {row['train_peak_mb']:6.0f} MiB, "
            f"step working memory {row['train_work_mb']:6.1f} MiB",
            file=sys.stderr,
            flush=True,
        )
    if in_process:
        times = measure_times(selected, args.support, args.query, args.batch, args.rounds, args.calls, args.pairs)
    else:
        times = _worker(args, "--worker", "timing", "--method", *[m.name for m in selected])
    for row in rows:
        row.update(times[row["method"]])
    by_name = {r["method"]: r for r in rows}
    for row in rows:  # MAML inference of the 2nd-order row = that of its 1st-order twin
        if row.get("infer_shared_with"):
            twin = by_name[row["infer_shared_with"]]
            row.update({k: v for k, v in twin.items() if k.startswith("infer_")})
    return rows


def _get(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["method"] == name), None)


def ratios(rows: list[dict], batch: int) -> list[tuple[str, float, float | None, dict | None, str]]:
    """(description, ratio of medians, ratio of minima or None, paired ratio or None, target) per CMML variant."""
    out = []
    melu5, melu20, melu5_so = (
        _get(rows, "MeLU-5 (1st order)"),
        _get(rows, "MeLU-20 (1st order)"),
        _get(rows, "MeLU-5 (2nd order)"),
    )

    def timed(other, cmml, field):
        low = other.get(field + "_min"), cmml.get(field + "_min")
        return other[field] / cmml[field], (low[0] / low[1] if None not in low else None)

    for c in (r for r in rows if r["family"] == "cmml"):
        n = c["method"]
        for tasks in (batch, 1):
            label, field = (f"batches of {tasks}" if tasks > 1 else "one task per call"), f"infer_ms_per_task_b{tasks}"
            paired = c.get(f"paired_b{tasks}", {}) if tasks > 1 else {}
            if melu5:
                out.append(
                    (
                        f"{n}: inference speed-up vs MeLU-5, {label}",
                        *timed(melu5, c, field),
                        paired.get(melu5["method"]),
                        "≥ 3×" if tasks > 1 else "–",
                    )
                )
            if melu20:
                out.append(
                    (
                        f"{n}: inference speed-up vs 20-step MAML (MeLU-20), {label}",
                        *timed(melu20, c, field),
                        paired.get(melu20["method"]),
                        "≥ 10×" if tasks > 1 else "–",
                    )
                )
        if melu5_so:
            out.append(
                (
                    f"{n}: training time per meta-batch, MeLU-5 (2nd order) / CMML",
                    *timed(melu5_so, c, "train_ms"),
                    None,
                    "–",
                )
            )
            out.append(
                (
                    f"{n}: training step working memory, MeLU-5 (2nd order) / CMML",
                    melu5_so["train_work_mb"] / c["train_work_mb"],
                    None,
                    None,
                    "well above 1",
                )
            )
            out.append(
                (
                    f"{n}: training peak RSS, MeLU-5 (2nd order) / CMML",
                    melu5_so["train_peak_mb"] / c["train_peak_mb"],
                    None,
                    None,
                    "–",
                )
            )
            out.append(
                (
                    f"{n}: training RSS Δ, MeLU-5 (2nd order) / CMML",
                    melu5_so["train_delta_mb"] / max(c["train_delta_mb"], 1e-9),
                    None,
                    None,
                    "–",
                )
            )
    return out


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    b = args.batch

    def t(r, field, digits):
        low = r.get(field + "_min")
        return f"{r[field]:.{digits}f}" + (f" ({low:.{digits}f})" if low is not None else "")

    lines = [
        f"Support {args.support}, query {args.query} per task. Times: median (minimum) over {args.rounds} "
        f"interleaved rounds; training = one compiled Adam step on {b} tasks; "
        "inference = compiled adapt + score, per task. "
        f"Memory: each method and mode in a fresh process; working memory from {ALLOCATOR}.",
        "",
        f"| method | train ms / meta-batch ({b} tasks) | train step working memory (MiB) | train peak RSS (MiB) "
        "| train RSS Δ (MiB) | first train call (s) "
        f"| infer ms / task (B={b}) | infer ms / task (B=1) | infer working memory (MiB, B={b}) "
        "| infer peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " ¹" if r.get("infer_shared_with") else ""
        lines.append(
            f"| {r['method']} | {t(r, 'train_ms', 1)} | {r['train_work_mb']:.1f} | {r['train_peak_mb']:.0f} "
            f"| {r['train_delta_mb']:.0f} | {r['train_first_call_s']:.1f} "
            f"| {t(r, f'infer_ms_per_task_b{b}', 3)}{mark} | {t(r, 'infer_ms_per_task_b1', 3)}{mark} "
            f"| {r['infer_work_mb']:.1f}{mark} | {r['infer_peak_mb']:.0f}{mark} |"
        )
    if any(r.get("infer_shared_with") for r in rows):
        lines += ["", "¹ MAML inference does not depend on the training order: measured once, on the first-order row."]
    lines += [
        "",
        'Ratios: "from medians" and "from minima" divide figures of the table above, taken at different times; '
        '"paired" is the median (interquartile range) of per-pair ratios, each pair one MeLU call between two blocks '
        "of CMML calls of about the same duration (`paired_ratio`), so that drift of the machine cancels.",
        "",
        "| ratio | from medians | from minima | paired: median (IQR) | target |",
        "|---|---|---|---|---|",
    ]
    for d, v, low, paired, target in ratios(rows, b):
        pair = (
            ""
            if paired is None
            else f"{paired['median']:.2f}× ({paired['q25']:.2f}–{paired['q75']:.2f}, {paired['pairs']} pairs)"
        )
        lines.append(f"| {d} | {v:.2f}× | {'' if low is None else f'{low:.2f}×'} | {pair} | {target} |")
    return "\n".join(lines)


def plot(rows: list[dict], batch: int, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [r["method"] for r in rows]
    colors = ["tab:green" if r["family"] == "cmml" else "tab:gray" for r in rows]
    y = np.arange(len(rows))
    panels = (
        (f"inference ms / task (B={batch})", f"infer_ms_per_task_b{batch}"),
        ("inference ms / task (B=1)", "infer_ms_per_task_b1"),
        (f"training ms / meta-batch ({batch} tasks)", "train_ms"),
        ("training step working memory (MiB)", "train_work_mb"),
        ("training: peak RSS (MiB)", "train_peak_mb"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * len(rows) + 1.8), sharey=True)
    for ax, (title, field) in zip(axes, panels):  # linear axes: bar lengths read as ratios
        values = [r[field] for r in rows]
        ax.barh(y, values, color=colors)
        ax.set_xlim(0, 1.18 * max(values))
        ax.set_title(title, fontsize=10)
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:.3g}", va="center", fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        "CMML (green) vs gradient meta-learning (grey): same framework, same tasks, one machine (times: medians)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--support", type=int, default=64)
    p.add_argument("--query", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument(
        "--calls",
        type=int,
        default=6,
        help="batched inference calls per method and round (training: half; single-task: 4x)",
    )
    p.add_argument(
        "--pairs", type=int, default=40, help="paired CMML / MeLU timing blocks per ratio (see paired_ratio)"
    )
    p.add_argument("--plot", default="docs/efficiency.png")
    p.add_argument("--methods", nargs="*", help="substrings selecting methods (default: all)")
    p.add_argument("--worker", choices=("memory", "timing"), help=argparse.SUPPRESS)
    p.add_argument("--method", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("train", "infer"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    use_measured_allocator()
    by_name = {m.name: m for m in methods()}
    if args.worker == "memory":
        result = measure_memory(by_name[args.method[0]], args.mode, args.support, args.query, args.batch)
    elif args.worker == "timing":
        result = measure_times(
            [by_name[n] for n in args.method], args.support, args.query, args.batch, args.rounds, args.calls, args.pairs
        )
    if args.worker:
        print(RESULT + json.dumps(result), flush=True)
        return
    selected = [m for m in methods() if not args.methods or any(s in m.name for s in args.methods)]
    t0 = time.perf_counter()
    rows = run(args, selected)
    print(markdown(rows, args))
    if args.plot:
        print(f"\nPlot: {plot(rows, args.batch, args.plot)}. Total wall time {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
