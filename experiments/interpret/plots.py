"""The studies' figures: t-SNE scatter panels and Soft-M route heat maps (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tsne(path: str | Path, panels: Sequence[Mapping[str, Any]], title: str, legend_title: str) -> None:
    """Scatter panels side by side. A panel: ``points`` [n, 2], ``labels`` (colour), optional
    ``markers`` (one marker key per point, see ``marker_names``), ``title``."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    classes = sorted(
        {str(l) for p in panels for l in p["labels"]}, key=lambda s: (len(s), s) if s.isdigit() else (0, s)
    )
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.2, 6.0), squeeze=False)
    marker_names: dict[str, str] = {}
    for ax, panel in zip(axes[0], panels):
        pts, labels = np.asarray(panel["points"]), [str(l) for l in panel["labels"]]
        markers = list(panel.get("markers") or ["o"] * len(labels))
        for marker in dict.fromkeys(markers):
            sel = np.array([m == marker for m in markers])
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                c=[colour[l] for l, s in zip(labels, sel) if s],
                marker=marker,
                s=22 if len(labels) > 100 else 60,
                alpha=0.85,
                edgecolors="black" if len(labels) <= 100 else "none",
                linewidths=0.4,
            )
        for text, (px, py) in zip(panel.get("annotations") or [], pts):
            ax.annotate(text, (px, py), xytext=(3, 3), textcoords="offset points", fontsize=6, color="0.25")
        marker_names.update(panel.get("marker_names") or {})
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[c], markersize=7, label=c) for c in classes]
    fig.legend(
        handles=handles, title=legend_title, loc="upper right", bbox_to_anchor=(1.0, 0.93), fontsize=8, title_fontsize=9
    )
    if marker_names:
        mh = [
            Line2D([], [], marker=m, linestyle="", color="grey", markeredgecolor="black", markersize=7, label=name)
            for m, name in marker_names.items()
        ]
        fig.legend(
            handles=mh, title="tasks", loc="lower right", bbox_to_anchor=(1.0, 0.06), fontsize=8, title_fontsize=9
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_routes(path: str | Path, tasks: Sequence[Mapping[str, Any]], title: str) -> None:
    """Heat maps of Soft-M routes: one row per task (``routes`` [k-1, m, m], ``final`` [m], ``title``),
    one column per routing step plus the final aggregation."""
    plt = _pyplot()

    steps, m = tasks[0]["routes"].shape[0], tasks[0]["routes"].shape[-1]
    cols = steps + 1
    fig, axes = plt.subplots(
        len(tasks),
        cols,
        figsize=(3.0 * steps + 3.2, 3.4 * len(tasks) + 0.9),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1] * steps + [0.3]},
    )
    image = None
    for r, task in enumerate(tasks):
        panels = [task["routes"][l] for l in range(steps)] + [np.asarray(task["final"])[:, None]]
        for c, (ax, mat) in enumerate(zip(axes[r], panels)):
            image = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis")
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
            ax.set_yticks(range(m))
            if c < steps:
                ax.set_xticks(range(m))
                ax.set_title(f"layer {c + 1} → layer {c + 2}", fontsize=9)
                ax.set_xlabel(f"to module j (layer {c + 2})", fontsize=8)
                ax.set_ylabel(f"from module i (layer {c + 1})", fontsize=8)
            else:
                ax.set_xticks([])
                ax.set_title("final\naggregation", fontsize=9)
                ax.set_ylabel(f"module (layer {steps + 1})", fontsize=8)
        axes[r][0].annotate(
            task.get("title", ""),
            xy=(-0.38, 0.5),
            xycoords="axes fraction",
            rotation=90,
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
        )
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="routing probability")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
