"""Statistics of the studies: t-SNE, how well labels separate in a vector space, Soft-M route distances."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of the rows of ``x`` to 2-D (one point per row), fixed ``random_state``."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, np.float64)
    n = len(x)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(x)


def knn_accuracy(x: np.ndarray, labels: Sequence, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy (Euclidean; majority vote, ties to the nearest neighbour's label)."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    n = len(labels)
    k = max(1, min(k, n - 1))
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    correct = 0
    for i in range(n):
        nb = [j for j in idx[i] if j != i][:k]
        votes: dict = {}
        for rank, j in enumerate(nb):
            count, first = votes.get(labels[j], (0, rank))
            votes[labels[j]] = (count + 1, first)
        best = max(votes.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
        correct += best == labels[i]
    return correct / n


def separation(x: np.ndarray, labels: Sequence, k: int, seed: int = 0, permutations: int = 20) -> dict[str, float]:
    """How well ``labels`` separate in the space of ``x``: k-NN accuracy (vs. permuted labels) and silhouette."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([knn_accuracy(x, rng.permutation(labels), k) for _ in range(permutations)]))
    out = {
        "knn_k": k,
        "knn_accuracy": knn_accuracy(x, labels, k),
        "knn_chance": chance,
        "classes": int(len(set(labels.tolist()))),
    }
    out["silhouette"] = silhouette(x, labels)
    return out


def route_vector(routes: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Every routing distribution of each task side by side: ``[tasks, (k-1)·m + 1, m]``."""
    t = routes.shape[0]
    cols = np.swapaxes(routes, -1, -2).reshape(t, -1, routes.shape[-1])  # [t, (k-1)*m (target j), m (source i)]
    return np.concatenate([cols, final[:, None, :]], axis=1)


def total_variation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean total-variation distance over the routing distributions of ``route_vector`` rows."""
    return 0.5 * np.abs(a - b).sum(-1).mean(-1)


def route_differences(routes: np.ndarray, final: np.ndarray, groups: Sequence[int]) -> dict[str, Any]:
    """Within- and between-group TV distances of tasks' routes, and the pair of groups (and of
    representative tasks, each its group's medoid) whose routes differ most."""
    vec = route_vector(routes, final)
    groups = np.asarray(groups)
    tv = total_variation(vec[:, None], vec[None, :])  # [t, t]
    same = groups[:, None] == groups[None, :]
    off = ~np.eye(len(groups), dtype=bool)
    uniq = sorted(set(groups.tolist()))
    means = {g: vec[groups == g].mean(0) for g in uniq}
    best = (-1.0, uniq[0], uniq[-1])
    for i, a in enumerate(uniq):
        for b in uniq[i + 1 :]:
            d = float(total_variation(means[a], means[b]))
            best = max(best, (d, a, b))
    picks = []
    for g in best[1:]:
        members = np.flatnonzero(groups == g)
        picks.append(int(members[np.argmin(total_variation(vec[members], means[g][None]))]))
    uniform = np.full_like(vec, 1.0 / vec.shape[-1])
    return {
        "tv_within_groups": float(tv[same & off].mean()) if (same & off).any() else float("nan"),
        "tv_between_groups": float(tv[~same].mean()) if (~same).any() else float("nan"),
        "tv_from_uniform": float(total_variation(vec, uniform).mean()),
        "group_pair": [int(best[1]), int(best[2])],
        "tv_group_means": best[0],
        "task_indices": picks,
        "tv_shown_tasks": float(tv[picks[0], picks[1]]),
    }


def silhouette(x: np.ndarray, labels: Sequence) -> float:
    """Silhouette score of ``labels`` in the space of ``x`` (nan unless 2 <= classes < points)."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x, labels)) if 2 <= len(set(labels)) < len(labels) else float("nan")
