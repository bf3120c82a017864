"""The blessing rule of the Evaluator (candidate versus baseline, absolute thresholds) and its
Markdown report."""

from __future__ import annotations

from typing import Any, List, Mapping

from cmml.models import evaluation


def decide_blessing(
    candidate: Mapping[str, float], baseline: Mapping[str, float], setting: str, rules: Mapping[str, Any]
) -> tuple[bool, list[str]]:
    """(blessed, reasons). Reasons name every rule and its figures, passed or failed."""
    metric, lower = evaluation.PRIMARY[setting]
    margin = float(rules.get("min_improvement", 0.0))
    c, b = candidate[metric], baseline[metric]
    gain = (b - c) if lower else (c - b)
    reasons = [
        f"{metric}: candidate {c:.4f} vs baseline {b:.4f} "
        f"({'better' if gain > 0 else 'not better'} by {gain:+.4f}, needs > {margin:g})"
    ]
    ok = gain > margin
    for name, bound in (rules.get("thresholds") or {}).items():
        if name not in candidate:
            raise ValueError(f"threshold on unknown metric {name!r}; metrics are {sorted(candidate)}")
        value = candidate[name]
        passed = value <= bound if evaluation.lower_is_better(name) else value >= bound
        relation = "<=" if evaluation.lower_is_better(name) else ">="
        reasons.append(f"{name}: {value:.4f} {relation} {bound} {'passed' if passed else 'FAILED'}")
        ok = ok and passed
    return ok, reasons


def report_markdown(results: Mapping[str, Mapping[str, float]], setting: str, blessed: bool, reasons: List[str]) -> str:
    names = evaluation.metric_names(setting)
    lines = [
        f"# Evaluation on meta-test tasks ({setting} setting)",
        "",
        "| model | tasks | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for model, values in results.items():
        lines.append(f"| {model} | {values['tasks']} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |")
    lines += ["", f"**{'BLESSED' if blessed else 'NOT BLESSED'}**", ""] + [f"- {r}" for r in reasons]
    return "\n".join(lines) + "\n"
