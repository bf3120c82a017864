"""RESULTS.md from the results files: one section per suite, the sweep sections, the compute budget.

Every section is rendered from its JSON record only (figures, commands, configuration); the suite
descriptions (notes) follow ``suites.yaml``. ``cmml experiment --render`` (or ``python -m
cmml.experiments.render``) re-renders every section from ``docs/results/*.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cmml.experiments import sweep
from cmml.experiments.findings import aggregate, findings, format_seconds
from cmml.experiments.results import json_default, load_json
from cmml.experiments.sections import BEGIN, END, write_section
from cmml.experiments.suites import (
    LOWER_IS_BETTER,
    SCENARIO_COLUMNS,
    USER_COLUMNS,
    load_pipeline_config,
    load_suites,
    metric_label,
)
from cmml.experiments.targets import shown_path


def _fmt(entry: Mapping[str, Any] | None, metric: str, bold: bool = False) -> str:
    if not entry or metric not in entry:
        return "–"
    m = entry[metric]
    text = f"{m['mean']:.4f}" if entry["deterministic"] or entry["n"] == 1 else f"{m['mean']:.4f} ± {m['std']:.4f}"
    return f"**{text}**" if bold else text


def render_table(record: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """The markdown table of one (suite) record: one row per model, mean ± std over seeds."""
    caps = {row: (m.get("training") or {}).get("epochs") for m in record.get("models", []) for row in m.get("rows", [])}
    runs = [
        {**r, "epoch_cap": r.get("epoch_cap", caps.get(r["model"]))} if r.get("seed") is not None else r
        for r in record.get("runs", [])
    ]
    summary = aggregate(runs, columns)
    order = [r for r in record.get("rows", []) if r in summary] + [
        r for r in summary if r not in record.get("rows", [])
    ]
    best = {}
    for c in columns:
        values = {r: summary[r][c]["mean"] for r in order if c in summary[r]}
        if values:
            best[c] = (min if c in LOWER_IS_BETTER else max)(values, key=values.get)
    groups = {m["rows"][k]: m.get("group", "") for m in record.get("models", []) for k in range(len(m["rows"]))}
    head = ["model"] + [metric_label(c) for c in columns]
    head += ["seeds", "epochs (best)", "train time / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in order:
        e = summary[r]
        seeds = "deterministic" if e["deterministic"] else str(e["n"])
        epochs = "–" if e["epochs"] is None else f"{e['epochs']:.1f} ({e['best_epoch']:.1f})"
        if e.get("capped"):
            epochs += f" ‡{e['capped']}"
        plain = not groups.get(r) or groups[r] in ("floor", "base") or r.startswith(groups[r])
        label = r if plain else f"{groups[r]}: {r}"
        cells = [label] + [_fmt(e, c, best.get(c) == r) for c in columns]
        lines.append("| " + " | ".join(cells + [seeds, epochs, format_seconds(e["train_seconds"])]) + " |")
    return lines


def _official_table(targets: Mapping[str, Any]) -> list[str]:
    rows = targets.get("official") or []
    if not rows:
        return []
    source = shown_path(targets)
    cols = [c for c in ("method", "MAE", "NDCG@1", "NDCG@3", "NDCG@5", "train time (alone, 2 cores)") if c in rows[0]]
    lines = [
        f"Official code on the same protocol (from {source}; single seed, external figures, not produced here):",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in rows]
    simple = targets.get("simple") or []
    if simple:
        scols = list(simple[0])
        lines += [
            "",
            f"Simple predictors on the same protocol (from {source}):",
            "",
            "| " + " | ".join(scols) + " |",
            "|" + "---|" * len(scols),
        ]
        lines += ["| " + " | ".join(r.get(c, "") for c in scols) + " |" for r in simple]
    return lines


def _rating_scale(record: Mapping[str, Any]) -> str:
    """The clipping range of the record's pipeline configuration (``evaluation.rating_range``), as ``[low, high]``."""
    pipeline = record.get("pipeline") or {}
    low, high = load_pipeline_config(pipeline.get("config_file"), pipeline.get("overrides")).evaluation["rating_range"]
    return f"[{low:g}, {high:g}]"


def _table_block(record: Mapping[str, Any], heading: str | None = None) -> list[str]:
    setting = record.get("setting", "user")
    columns = USER_COLUMNS if setting == "user" else SCENARIO_COLUMNS
    lines = [f"### {heading}", ""] if heading else []
    data = record.get("data") or {}
    tasks = data.get("tasks") or {}
    if tasks:
        lines.append(
            f"Records: `{data.get('records')}` — "
            + ", ".join(f"{tasks.get(k, 0):,} {k}" for k in ("meta_train", "meta_valid", "meta_test"))
            + (f" tasks; {data['rows']:,} rows." if data.get("rows") else " tasks.")
        )
    check = record.get("check")
    if check and check.get("found"):
        f = check["found"]
        lines.append(
            f"Protocol check: user {f['user']} ({f['split']}) has {f['ratings']} ratings, "
            f"query movies {', '.join(f['query_movies'])}, "
            f"query ratings {', '.join(str(int(r)) for r in f['query_ratings'])} — {check.get('status')}."
        )
    elif check:
        lines.append(f"Protocol check: {check.get('status')}.")
    if lines and lines[-1]:
        lines.append("")
    metric_note = (
        f"MAE / RMSE over each meta-test user's 10 query ratings (predictions clipped to {_rating_scale(record)}), "
        "NDCG@k of the 10 query items (gain 2^r − 1), averaged per user"
        if setting == "user"
        else "Recall@N over all candidate items of each meta-test scenario, per evaluation user, "
        "averaged over (scenario, user) rows"
    )
    lines += [
        f"{metric_note}; mean ± sample std over seeds; **bold** = best mean. Train time / run includes tracing and "
        "validation (for DCN-F: DCN's training plus the choice of the fine-tuning rate on meta_valid).",
        "",
    ]
    lines += render_table(record, columns)
    if "‡" in "\n".join(lines):
        lines += [
            "",
            "‡n: n runs reached the epoch cap with their best validation score in the last three epochs: "
            "they may be under-trained (the cap is the compute budget, see the configuration).",
        ]
    notes = [f"{m['name']}: {m['note']}" for m in record.get("models", []) if m.get("note")]
    if notes:
        lines += [""] + [f"- {n}." for n in notes]
    if setting == "user" and any(r["model"] == "global mean" for r in record.get("runs", [])):
        lines += [
            "",
            "The global mean gives every item the same score; ties rank pessimistically (`models/metrics.py`: lower "
            "ratings first), so its NDCG is that of the worst ordering.",
        ]
    sel = record.get("selection") or {}
    if sel:
        lines += [""] + [
            f"- {name}: configuration chosen on meta_valid (seed {record.get('seeds', [0])[0]}"
            + (f", selection trainings capped at {v['epochs']} epochs" if v.get("epochs") else "")
            + f") among {'; '.join(v['options'])} → option {v['chosen']} "
            f"(validation {', '.join(f'{x:.4f}' for x in v['validation'])}; lower is better: MAE, or minus Recall@20)."
            for name, v in sel.items()
        ]
    reused = sorted({(r["model"], r["reused_from"]) for r in record.get("runs", []) if r.get("reused_from")})
    if reused:
        lines += [
            "",
            "Rows reused from another suite's runs (same TaskGen records, configuration and seeds; not retrained): "
            + ", ".join(f"{m} ← {src}" for m, src in reused)
            + ".",
        ]
    ft = [r for r in record.get("runs", []) if r.get("finetune_validation")]
    if ft:
        lrs = sorted({r["config"]["finetune_lr"] for r in ft})
        lines += [
            "",
            f"DCN-F: 5 SGD steps on the top two layers, rate chosen per seed on meta_valid from "
            f"{', '.join(ft[0]['finetune_validation'])} → {', '.join(str(x) for x in lrs)}.",
        ]
    return lines


def render_section(record: Mapping[str, Any]) -> str:
    """The markdown section of a suite (between its markers), from its JSON record only."""
    name = record["suite"]
    seeds = record.get("seeds") or []
    lines = [BEGIN.format(name), f"## {record['title']}", ""]
    lines.append(f"Command: `{record['command']}`  ")
    if record.get("resumed"):
        earlier = [c for c in record.get("resumed_from") or [] if c]
        lines.append(
            "(rows kept from the earlier invocation(s) "
            + ", ".join(f"`{c}`" for c in earlier)
            + " — `--resume` keeps the rows whose configuration did not change, `--models` leaves the other rows; "
            "`--suite <suite>` alone retrains every row)  "
        )
    when = f"Run: {record.get('date')}, code {record.get('commit')}, seeds {', '.join(map(str, seeds))}"
    when += f", {record.get('cpus')} CPU cores"
    over = " over the invocations listed below" if record.get("resumed") else ""
    lines.append(f"{when}, wall time {record.get('wall_seconds', 0) / 60:.1f} min{over}.")
    extra = record.get("extra")
    loads = [r["load1"] for r in record.get("runs", []) + (extra or {}).get("runs", []) if r.get("load1") is not None]
    if loads:
        lines[-1] += (
            f" Machine load while training (1-min load average after each run): median {np.median(loads):.1f}, "
            f"max {max(loads):.1f} on {record.get('cpus')} cores — run times are wall times on a shared machine."
        )
    caps = [f"{k} {record[k]}" for k in ("max_epochs", "patience") if record.get(k) is not None]
    if caps:
        lines[-1] += f" Command-line caps: {', '.join(caps)}."
    lines.append("")
    for note in record.get("notes") or []:
        lines += [note, ""]
    lines += _table_block(record)
    if record.get("targets"):
        lines += [""] + _official_table(record["targets"])
    facts = findings(record)
    if extra:
        lines += [""] + _table_block(extra, extra.get("title"))
        facts += findings(extra)
    if facts:
        lines += ["", "Findings (computed from the figures above):", ""] + [f"- {f}" for f in facts]
    config = {"pipeline": record.get("pipeline"), "episodes": record.get("episodes"), "models": record.get("models")}
    if extra:
        config["extra"] = {k: extra.get(k) for k in ("pipeline", "episodes", "models")}
    lines += [
        "",
        "<details><summary>Configuration (model dicts, training, data)</summary>",
        "",
        "```json",
        json.dumps(config, indent=1, default=json_default),
        "```",
        "",
        "</details>",
        END.format(name),
    ]
    return "\n".join(lines) + "\n"


def render_all(json_dir: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Re-renders every suite and sweep section of ``out``, and the compute budget, from ``json_dir``'s JSON files."""
    defined, sweeps = load_suites(), sweep.load_sweeps()
    done = []
    for path in sorted(Path(json_dir).glob("*.json")):
        record = load_json(path)
        if record and "sweep" in record:
            if record["sweep"] in sweeps:  # the description follows the sweep file; figures come from the JSON
                record["note"] = sweeps[record["sweep"]].note
            write_section(out, f"{record['sweep']}-sweep", sweep.render_sweep(record))
            done.append(f"{record['sweep']}-sweep")
        if record and "suite" in record:
            if record["suite"] in defined:  # suite descriptions follow the suite file; figures come from the JSON
                record["notes"] = list(defined[record["suite"]].notes)
            write_section(out, record["suite"], render_section(record))
            done.append(record["suite"])
    if done:
        write_section(out, "budget", render_budget(json_dir))
    return done


def render_budget(json_dir: str | os.PathLike) -> str:
    """Measured training costs of every suite in ``json_dir`` and what a full regeneration costs."""
    suite_order = list(load_suites())
    records = [r for r in (load_json(p) for p in sorted(Path(json_dir).glob("*.json"))) if r and "suite" in r]
    order = {s: i for i, s in enumerate(suite_order)}
    records.sort(key=lambda r: order.get(r["suite"], len(order)))
    lines = [
        BEGIN.format("budget"),
        "## Compute budget and run times",
        "",
        "Measured wall times of the runs above (2 CPU cores shared with other jobs; see each section's load figures). "
        "Per model: mean training time of one run (tracing, training epochs and meta_valid validation; DCN-F adds the "
        "choice of its fine-tuning rate) and seconds per epoch.",
        "",
        "| suite | model | runs | epochs run (mean) | train time / run | s / epoch (incl. tracing, validation) |",
        "|---|---|---|---|---|---|",
    ]
    totals = []
    for rec in records:
        for part in (rec, rec.get("extra") or {}):
            runs = [
                r
                for r in part.get("runs", [])
                if r.get("seed") is not None and not r.get("reused_from") and not r.get("finetune_validation")
            ]
            by_model: dict[str, list] = {}
            for r in runs:
                by_model.setdefault(r["model"], []).append(r)
            for model, rs in by_model.items():
                secs = float(np.mean([r["train_seconds"] for r in rs]))
                epochs = float(np.mean([r["epochs_run"] for r in rs]))
                table = f"{rec['suite']}{' (scenario table)' if part is not rec else ''}"
                per_epoch = secs / max(epochs, 1)
                lines.append(
                    f"| {table} | {model} | {len(rs)} | {epochs:.1f} | {format_seconds(secs)} | {per_epoch:.1f} |"
                )
        seeds = len(rec.get("seeds") or [])
        train = sum(
            r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
            for part in (rec, rec.get("extra") or {})
            for r in part.get("runs", [])
            if not r.get("reused_from") and not r.get("finetune_validation")
        )
        totals.append((rec["suite"], seeds, rec.get("wall_seconds", 0.0), train))
    lines += [
        "",
        "| suite | seeds run | wall time of the run | training + scoring, summed | estimate for 5 seeds |",
        "|---|---|---|---|---|",
    ]
    for name, seeds, wall, train in totals:
        estimate = wall * 5 / seeds if seeds else float("nan")
        lines.append(f"| {name} | {seeds} | {wall / 60:.1f} min | {train / 60:.1f} min | {estimate / 60:.0f} min |")
    missing = [s for s in suite_order if s not in {t[0] for t in totals}]
    if missing:
        lines += ["", f"Not run yet (no figures): {', '.join(missing)}."]
    lines.append(END.format("budget"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from cmml.experiments.cli import render_main

    sys.exit(render_main())
