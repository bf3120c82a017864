"""Running a suite: every (model, seed) trained through the training API, scored on meta_test, saved at once.

Each result goes to ``<json_dir>/<suite>.json`` as soon as it is known (so ``--resume`` can pick up
an interrupted run); the suite's section of the results file is then re-rendered from that JSON
(:mod:`cmml.experiments.render`). Trained models are built and fitted by
:func:`cmml.models.training.train` (early stopping on meta_valid); the floors (global mean, item
mean, bias model, ItemPop) are fitted on every meta-train interaction once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cmml.experiments import render, results
from cmml.experiments.data import Data, check_users_v1, prepare_tasks, task_counts, task_rows
from cmml.experiments.suites import LOWER_IS_BETTER, ModelSpec, Suite
from cmml.experiments.targets import read_targets
from cmml.models import simple
from cmml.models.training import available_features, numpy_scorer, train

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclasses.dataclass
class Options:
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    cache_dir: str = "runs/experiments"
    json_dir: str = "docs/results"
    out: str | None = "RESULTS.md"
    targets: str | None = None  # the reference figures file (official-code figures, protocol check value)
    models: Sequence[str] = ()  # substrings of model names to run (default: all)
    max_epochs: int | None = None
    patience: int | None = None
    resume: bool = False
    command: str = "cmml experiment"
    beam: dict | None = None
    log: Log = print
    training_log: bool = False  # print every epoch too
    no_reuse: bool = False  # never reuse other suites' runs


def _floor(spec: ModelSpec, data: Data):
    cfg = spec.config
    if spec.kind == "global_mean":
        return simple.GlobalMean().fit(data.fit_batches())
    if spec.kind == "item_mean":
        return simple.ItemMean(shrinkage=cfg.get("shrinkage", 2.0)).fit(data.fit_batches())
    if spec.kind == "bias":
        return simple.BiasModel(cfg.get("item_shrinkage", 2.0), cfg.get("user_shrinkage", 5.0), clip=data.clip).fit(
            data.fit_batches()
        )
    return simple.ItemPop().fit(data.fit_batches())


def run_model(spec: ModelSpec, data: Data, seed: int, chosen: dict | None = None, log: Log | None = None) -> list[dict]:
    """Trains / fits one model for one seed and scores it on meta_test. One result per row (DCN gives DCN and DCN-F)."""
    start = time.time()
    if spec.deterministic:
        tf.keras.utils.set_random_seed(
            0
        )  # ItemPop's tie-break reads one epoch of sampled episodes: same in every table
        predictor = _floor(spec, data)
        fitted = time.time() - start
        metrics = data.evaluate(lambda f: predictor(dict(f)).numpy())
        return [
            {
                "model": spec.name,
                "seed": None,
                "metrics": metrics,
                "train_seconds": fitted,
                "eval_seconds": time.time() - start - fitted,
                "config": spec.config,
            }
        ]
    config = chosen if chosen is not None else spec.config
    trained = train(data, spec.kind, config, data.training_config(spec.training, seed), data.clip, log or _quiet)
    fit, model = trained.summary, trained.model
    seconds = time.time() - start
    base = {
        "seed": seed,
        "train_seconds": seconds,
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "epoch_cap": spec.training.get("epochs"),
        "best_validation": fit["best_validation"],
        "config": trained.config,
    }
    t = time.time()
    out = [{**base, "model": spec.name, "metrics": data.evaluate(numpy_scorer(model)), "eval_seconds": time.time() - t}]
    if spec.finetuned:
        from cmml.models.dcn import FineTunedDCN

        t = time.time()
        validate = data.validator(data.clip)
        scores = {lr: validate(FineTunedDCN(model, learning_rate=lr)) for lr in spec.finetune_grid}
        lr = min(scores, key=scores.get)
        selected = time.time() - t
        t = time.time()
        metrics = data.evaluate(numpy_scorer(FineTunedDCN(model, learning_rate=lr)))
        out.append(
            {
                **base,
                "model": spec.finetuned,
                "metrics": metrics,
                "eval_seconds": time.time() - t,
                "train_seconds": seconds + selected,
                "config": {**trained.config, "finetune_lr": lr},
                "finetune_validation": {str(k): v for k, v in scores.items()},
            }
        )
    return out


def select_config(spec: ModelSpec, data: Data, seed: int, log: Log) -> tuple[dict, dict]:
    """Among ``spec.config`` and ``spec.candidates``, the config with the best meta_valid score at ``seed``.

    Returns (chosen config, selection record). The winner's run is not reused: every seed trains afresh.
    """
    options = [spec.config] + list(spec.candidates)
    scores = []
    training = dict(spec.training)
    if spec.selection_epochs:
        training["epochs"] = min(int(training.get("epochs", spec.selection_epochs)), spec.selection_epochs)
    for k, config in enumerate(options):
        t = time.time()
        fit = train(data, spec.kind, config, data.training_config(training, seed), data.clip).summary
        scores.append(fit["best_validation"])
        log(
            f"    selection {spec.name} option {k}: validation {fit['best_validation']:.4f} ({time.time() - t:.0f} s) "
            f"{_diff(spec.config, config)}"
        )
    best = int(np.argmin(scores))
    return options[best], {
        "options": [_diff(spec.config, c) or "the configuration listed below" for c in options],
        "validation": scores,
        "chosen": best,
        "epochs": training.get("epochs"),
    }


def _diff(base: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    keys = sorted(set(base) | set(other))
    return ", ".join(f"{k}={other.get(k)}" for k in keys if base.get(k) != other.get(k))


def _selected(models: Sequence[ModelSpec], names: Sequence[str]) -> list[ModelSpec]:
    if not names:
        return list(models)
    return [m for m in models if any(n.lower() in r.lower() for n in names for r in m.rows())]


def _apply_caps(spec: ModelSpec, opts: Options) -> ModelSpec:
    if spec.deterministic or (opts.max_epochs is None and opts.patience is None):
        return spec
    training = dict(spec.training)
    if opts.max_epochs is not None:
        training["epochs"] = min(int(training.get("epochs", opts.max_epochs)), opts.max_epochs)
    if opts.patience is not None:
        training["patience"] = opts.patience
    return dataclasses.replace(spec, training=training)


def _brief(metrics: Mapping[str, float], columns: Sequence[str]) -> str:
    return ", ".join(f"{c.upper() if c in LOWER_IS_BETTER else c} {metrics[c]:.4f}" for c in columns if c in metrics)


def run_table(suite: Suite, opts: Options, record: dict, save: Callable[[], None]) -> None:
    """Runs one table of a suite into ``record`` (a JSON-able dict), saving after every result."""
    log = opts.log
    root = prepare_tasks(suite, opts.cache_dir, log, opts.beam)
    record["data"] = {
        "records": os.path.relpath(root, os.getcwd()),
        "tasks": task_counts(root),
        "rows": task_rows(root),
    }
    if suite.check == "users-v1":
        record["check"] = check_users_v1(root, read_targets(opts.targets), log)
    data = Data(root, suite.setting, suite.episodes, suite.rating_range)

    def usable(config: Mapping[str, Any]) -> dict:  # the record shows the reduced feature list; training warns
        return available_features(config, data.specs)

    everything = [_apply_caps(m, opts) for m in suite.models]
    specs = _selected(everything, opts.models)
    # with --models, the other rows keep their figures from the JSON file (the table stays whole)
    kept = [m for m in everything if m not in specs]
    record["models"] = [
        {
            "name": m.name,
            "rows": m.rows(),
            "kind": m.kind,
            "group": m.group,
            "note": m.note,
            "config": usable(m.config),
            "training": m.training,
            "candidates": [usable(c) for c in m.candidates],
        }
        for m in everything
    ]
    record["rows"] = [r for m in everything for r in m.rows()]
    prior = record.get("runs", [])
    previous = {(r["model"], r["seed"], r.get("fingerprint")): r for r in prior} if opts.resume else {}
    shared = {} if opts.no_reuse else shared_runs(opts.json_dir, record, suite.name)
    kept_rows = {row for m in kept for row in m.rows()}
    record["runs"] = [r for r in prior if r["model"] in kept_rows]
    selections = {k: v for k, v in record.get("selection", {}).items() if opts.resume or k in {m.name for m in kept}}
    record["selection"] = selections
    t_suite = time.time()
    for spec in [m for m in specs if m.deterministic]:
        key = (spec.name, None, spec.fingerprint())
        if key in previous:
            record["runs"].append(previous[key])
            continue
        for result in run_model(spec, data, 0):
            result["fingerprint"] = spec.fingerprint()
            record["runs"].append(result)
            seconds = result["train_seconds"] + result["eval_seconds"]
            log(f"[{suite.name}] {result['model']}: {_brief(result['metrics'], suite.columns)} ({seconds:.1f} s)")
        save()
    trained = [m for m in specs if not m.deterministic]
    for seed in opts.seeds:
        for spec in trained:
            fp = spec.fingerprint()
            done = [previous.get((row, seed, fp)) for row in spec.rows()]
            if all(done):
                for r in done:
                    r.setdefault("epoch_cap", spec.training.get("epochs"))
                record["runs"].extend(done)
                continue
            reused = shared.get((fp, seed))
            if reused and len(reused) >= len(spec.rows()):
                for row, result in zip(spec.rows(), reused):
                    record["runs"].append({**result, "model": row})
                    log(
                        f"[{suite.name}] seed {seed} {row}: reused from {result['reused_from']} (same records, "
                        f"configuration and seed): {_brief(result['metrics'], suite.columns)}"
                    )
                save()
                continue
            chosen = None
            if spec.candidates:
                sel = selections.get(spec.name)
                if sel is None or sel.get("fingerprint") != fp:
                    log(f"[{suite.name}] choosing the {spec.name} configuration on meta_valid (seed {opts.seeds[0]})")
                    config, sel = select_config(spec, data, opts.seeds[0], log)
                    sel.update({"fingerprint": fp, "config": usable(config)})
                    selections[spec.name] = sel
                    save()
                chosen = sel["config"]
            epoch_log = (lambda line: log(f"    {line.strip()}")) if opts.training_log else None
            for result in run_model(spec, data, seed, chosen, epoch_log):
                result["fingerprint"] = fp
                result["load1"] = results.load_average()
                record["runs"].append(result)
                log(
                    f"[{suite.name}] seed {seed} {result['model']}: {_brief(result['metrics'], suite.columns)} "
                    f"(epochs {result['epochs_run']}, best {result['best_epoch']}, "
                    f"train {result['train_seconds']:.0f} s, eval {result['eval_seconds']:.0f} s)"
                )
            save()
    record["seconds"] = time.time() - t_suite


def shared_runs(
    json_dir: str | os.PathLike, record: Mapping[str, Any], suite_name: str
) -> dict[tuple[str, int], list[dict]]:
    """Trained runs of other suites' JSON files on the same TaskGen records and episode sizes, by (fingerprint, seed):
    a model trained there with the same configuration and seed is the same computation (ablation rows that are
    also users-v1 rows)."""
    out: dict[tuple[str, int], list[dict]] = {}
    for path in sorted(Path(json_dir).glob("*.json")):
        other = results.load_json(path) or {}
        for rec in (other, other.get("extra") or {}):
            if other.get("suite") == suite_name or not rec.get("runs"):
                continue
            same_records = (rec.get("data") or {}).get("records") == record["data"]["records"]
            if not same_records or rec.get("episodes") != record.get("episodes"):
                continue
            for r in rec["runs"]:
                if r.get("seed") is None or not r.get("fingerprint") or r.get("reused_from"):
                    continue
                group = out.setdefault((r["fingerprint"], r["seed"]), [None, None])
                group[1 if r.get("finetune_validation") else 0] = {**r, "reused_from": other.get("suite")}
    return {k: [r for r in v if r is not None] for k, v in out.items() if v[0] is not None}


def _display(overrides: Mapping[str, Any]) -> dict:
    """Pipeline overrides with dataset paths relative to the working directory (as a user types them)."""
    out = dict(overrides)
    if "data" in out:
        out["data"] = [os.path.relpath(d) if os.path.isabs(str(d)) else d for d in out["data"]]
    return out


def run_suite(suite: Suite, opts: Options) -> dict:
    """Runs a suite, writes ``<json_dir>/<suite>.json`` and re-renders its section of ``opts.out``."""
    path = Path(opts.json_dir) / f"{suite.name}.json"
    old = results.load_json(path) if (opts.resume or opts.models) else None
    start = time.time()
    record: dict[str, Any] = {
        "suite": suite.name,
        "title": suite.title,
        "setting": suite.setting,
        "command": opts.command,
        "date": results.now(),
        "commit": results.git_commit(),
        "seeds": list(opts.seeds),
        "cpus": os.cpu_count(),
        "notes": list(suite.notes),
        "pipeline": {"config_file": suite.config_file, "overrides": _display(suite.overrides)},
        "episodes": suite.episodes,
        "max_epochs": opts.max_epochs,
        "patience": opts.patience,
    }
    if suite.official:
        record["targets"] = read_targets(opts.targets)
    tables = [(suite, record)]
    if suite.extra is not None:
        extra_record = {
            "title": suite.extra.title,
            "setting": suite.extra.setting,
            "episodes": suite.extra.episodes,
            "pipeline": {"config_file": suite.extra.config_file, "overrides": _display(suite.extra.overrides)},
        }
        record["extra"] = extra_record
        tables.append((suite.extra, extra_record))
    # resumed: the earlier invocations' wall time too
    earlier = float((old or {}).get("wall_seconds", 0.0)) if opts.resume else 0.0

    def save():
        record["wall_seconds"] = earlier + time.time() - start
        results.write_json(path, record)

    for table, rec in tables:
        if old is not None:
            prior = old if rec is record else old.get("extra") or {}
            rec["runs"], rec["selection"] = prior.get("runs", []), prior.get("selection", {})
        run_table(table, opts, rec, save)
    record["wall_seconds"] = earlier + time.time() - start
    if old is not None:  # figures kept from earlier invocations (--resume, or rows outside --models)
        record["resumed"] = True
        record["resumed_from"] = old.get("commands", [old.get("command")])
    record["commands"] = (record.get("resumed_from") or []) + [opts.command] if old is not None else [opts.command]
    save()
    if opts.out:
        render.write_section(opts.out, suite.name, render.render_section(record))
        render.write_section(opts.out, "budget", render.render_budget(opts.json_dir))
        minutes = record["wall_seconds"] / 60
        opts.log(f"[{suite.name}] wrote {path} and the '{suite.name}' section of {opts.out} ({minutes:.1f} min)")
    return record


if __name__ == "__main__":
    import sys

    from cmml.experiments.cli import experiment_main

    sys.exit(experiment_main())
