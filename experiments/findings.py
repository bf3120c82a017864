"""Figures over seeds (mean ± sample std) and the statements RESULTS.md computes from them.

Findings compare rows the paper compares (CMML against DCN, fine-tuning, meta-learning, the
Table 9 ablations), state whether each claim reproduces, and flag differences within the
seed-to-seed spread or the test set's own sampling noise. They are computed from a suite's JSON
record only, so re-rendering gives the same text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cmml.experiments.suites import LOWER_IS_BETTER, SCENARIO_COLUMNS, USER_COLUMNS, metric_label
from cmml.experiments.targets import shown_path

# our rows -> the rows of the reference file's tables that correspond (name prefixes)
OFFICIAL_MATCH = {
    "CMML FiLM": "CMML FiLM + mean",
    "CMML Soft-M": "CMML soft-module",
    "MeLU (5 steps)": "MeLU",
    "MetaCS-DNN (5 steps)": "MetaDNN",
}
SIMPLE_MATCH = {"global mean": "global mean", "item mean": "shrunk item mean", "bias model": "bias model"}


def aggregate(runs: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model: mean and sample standard deviation (ddof 1; 0 for one run) of every metric over its runs,
    the number of runs, and the mean train seconds / epochs."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["model"], []).append(r)
    out = {}
    for model, rs in groups.items():
        entry: dict[str, Any] = {"n": len(rs), "deterministic": all(r.get("seed") is None for r in rs)}
        for c in columns:
            values = np.array([r["metrics"][c] for r in rs if c in r["metrics"]], np.float64)
            if values.size:
                entry[c] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}
        entry["train_seconds"] = float(np.mean([r.get("train_seconds", 0.0) for r in rs]))
        epochs = [r["epochs_run"] for r in rs if r.get("epochs_run") is not None]
        entry["epochs"] = float(np.mean(epochs)) if epochs else None
        best = [r["best_epoch"] for r in rs if r.get("best_epoch") is not None]
        entry["best_epoch"] = float(np.mean(best)) if best else None
        caps = [
            r
            for r in rs
            if r.get("epoch_cap")
            and r.get("epochs_run") == r["epoch_cap"]
            and r.get("best_epoch", 0) >= r["epoch_cap"] - 2
        ]
        entry["capped"] = len(caps)  # runs stopped by the epoch cap while still improving (best in the last 3 epochs)
        out[model] = entry
    return out


def format_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min"


def _mean(summary, model, metric):
    e = summary.get(model)
    return None if not e or metric not in e else e[metric]["mean"]


def noise_lines(record: Mapping[str, Any], metric: str, what: str) -> list[str]:
    """The test set's own sampling noise: the 95 % half-width of the primary metric's mean over test tasks."""
    runs = [
        r
        for r in record.get("runs", [])
        if r["metrics"].get(f"{metric}_halfwidth95") is not None and r.get("seed") is not None
    ]
    if not runs:
        return []
    half = float(np.mean([r["metrics"][f"{metric}_halfwidth95"] for r in runs]))
    tasks = int(runs[0]["metrics"].get("tasks", 0))
    return [
        f"Noise: the 95 % half-width of the mean {metric_label(metric)} over the {tasks:,} meta-test {what} "
        f"is {half:.4f} (mean over the trained rows): a difference between two rows smaller than that is not "
        "established by this test set, however small the seed-to-seed spread (an unpaired bound; a paired test on "
        "the same tasks is tighter)."
    ]


def findings(record: Mapping[str, Any]) -> list[str]:
    """Statements computed from the figures: the targets and the paper's claims, reproduced or not."""
    setting = record.get("setting", "user")
    columns = USER_COLUMNS if setting == "user" else SCENARIO_COLUMNS
    s = aggregate(record.get("runs", []), columns)
    out = []

    def cmp(a: str, b: str, metric: str, claim: str):
        x, y = _mean(s, a, metric), _mean(s, b, metric)
        if x is None or y is None:
            return
        better = x < y if metric in LOWER_IS_BETTER else x > y
        noise = math.hypot(s[a][metric]["std"], s[b][metric]["std"])
        small = " (the difference is within the seed-to-seed spread)" if abs(x - y) <= noise else ""
        verdict = "reproduces" if better else "does NOT reproduce"
        out.append(f"{claim}: {a} {metric_label(metric)} {x:.4f} vs {b} {y:.4f} — {verdict}{small}.")

    if setting == "user":
        reference = record.get("targets") or {}
        targets = reference.get("targets")
        for model in [m for m in s if m.startswith("CMML")] if targets else []:
            e = s[model]
            for metric, bound in targets.items():
                if metric in e:
                    m = e[metric]
                    ok = m["mean"] <= bound if metric in LOWER_IS_BETTER else m["mean"] >= bound
                    verdict = "met" if ok else f"NOT met (gap {m['mean'] - bound:+.4f})"
                    out.append(
                        f"Target CMML {metric_label(metric)} "
                        f"{'≤' if metric in LOWER_IS_BETTER else '≥'} {bound} ({shown_path(reference)}), {model}: "
                        f"{m['mean']:.4f} ± {m['std']:.4f} over {e['n']} seeds — {verdict}."
                    )
        out += _reference_lines(record, s)
        out += _ablation_lines(record, s, "mae")
        out += noise_lines(record, "mae", "users")
        if targets and "CMML FiLM" in s:
            film = s["CMML FiLM"]
            out.append(
                f"Training time: CMML FiLM takes {format_seconds(film['train_seconds'])} per run here, shared machine, "
                f"to MAE {film['mae']['mean']:.4f} ({shown_path(reference)}: reach MAE ≤ 0.79 in "
                "≤ 5 minutes)."
            )
        cmp("CMML FiLM", "DCN", "mae", "CMML beats DCN")
        cmp("CMML FiLM", "bias model", "mae", "CMML beats the bias model floor")
        cmp("DCN-F", "DCN", "mae", "Fine-tuning helps DCN (paper, user setting)")
        for meta in ("MeLU (5 steps)", "MetaCS-DNN (5 steps)", "CMML FiLM", "CMML Soft-M"):
            cmp(meta, "DCN-F", "mae", "Meta-learning beats the DCN baselines (paper, user setting)")
        cmp("CMML FiLM", "MeLU (5 steps)", "mae", "CMML comparable to or better than MeLU (paper)")
        cmp("CMML FiLM", "MeLU (5 steps)", "ndcg@3", "CMML comparable to or better than MeLU (paper)")
    else:
        out += noise_lines(record, "recall@20", "(scenario, evaluation user) rows")
        for model in ("CMML FiLM", "CMML Soft-M"):
            for base in ("DCN-F", "DCN", "ItemPop"):
                cmp(model, base, "recall@20", f"{model} beats {base} (paper Table 2)")
        cmp("DCN-F", "DCN", "recall@20", "Fine-tuning helps DCN (paper, MovieLens)")
        cmp(
            "CMML FiLM",
            "MAML (MeLU-style, 5 steps)",
            "recall@20",
            "CMML comparable to or better than gradient meta-learning",
        )
        cmp("PE (mean)", "Non-negative-PE (mean)", "recall@20", "Removing the support negatives hurts (paper Table 9)")
        cmp("SE (GRU)", "PE (mean)", "recall@20", "SE beats PE (paper Table 9)")
        cmp("SE + hybrid mlp", "SE (GRU)", "recall@20", "A hybrid context helps (paper Table 9)")
        cmp("SE + hybrid dot", "SE + hybrid mlp", "recall@20", "Dot hybrid beats MLP hybrid (paper Table 9)")
    return out


def _ablation_lines(record: Mapping[str, Any], s: Mapping[str, Any], metric: str) -> list[str]:
    """Each ablation row against the base row (one factor changed), in the primary metric."""
    base = next((m["name"] for m in record.get("models", []) if m.get("group") == "base"), None)
    if base is None or base not in s:
        return []
    x = _mean(s, base, metric)
    name = metric_label(metric)
    parts = []
    for m in record.get("models", []):
        y = _mean(s, m["name"], metric)
        if m.get("group") not in ("base", "floor", "") and y is not None:
            worse = y > x if metric in LOWER_IS_BETTER else y < x
            parts.append(f"{m['name']} {y:.4f} ({y - x:+.4f}, {'worse' if worse else 'better'})")
    return [f"One factor changed from the base ({base}, {name} {x:.4f}): " + "; ".join(parts) + "."] if parts else []


def _number(cell: str | None) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?", (cell or "").replace("*", ""))
    return float(m.group(0)) if m else None


def _reference_lines(record: Mapping[str, Any], s: Mapping[str, Any]) -> list[str]:
    """Our figures next to the reference file's (official code, simple predictors), where the rows correspond."""
    targets = record.get("targets") or {}
    out = []
    for rows, match, label in (
        (targets.get("simple") or [], SIMPLE_MATCH, "predictor"),
        (targets.get("official") or [], OFFICIAL_MATCH, "method"),
    ):
        for ours, prefix in match.items():
            ref = next((r for r in rows if r.get(label, "").startswith(prefix)), None)
            if ref is None or ours not in s:
                continue
            parts = []
            for metric, column in (("mae", "MAE"), ("ndcg@3", "NDCG@3")):
                x, y = _mean(s, ours, metric), _number(ref.get(column))
                if x is not None and y is not None:
                    parts.append(f"{column} {x:.4f} vs {y:.3f} ({x - y:+.4f})")
            if parts:
                out.append(
                    f"{ours} here vs '{ref[label].split(':')[0]}' in {shown_path(targets)}: " + ", ".join(parts) + "."
                )
    return out
