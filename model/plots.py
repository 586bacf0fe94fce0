"""Figures for an evaluation report, written straight to PNG files.

Figures are built on matplotlib.figure.Figure and saved through the Agg
renderer, never through pyplot: nothing global is touched, no display is
needed, and plotting from a server thread is safe.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

_DPI = 120


def plot_precision_recall(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path,
                          *, title: str = "Precision-recall by Hamming radius") -> Path:
    """One line per method from its {"precision": [...], "recall": [...]} (one point per radius)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for method, curve in curves.items():
        ax.plot(curve["recall"], curve["precision"], marker=".", markersize=4, label=method)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_precision_at_n(curves: Mapping[str, Mapping[int, float]], path: str | Path,
                        *, title: str = "Precision of the top N") -> Path:
    """One line per method from its {N: precision@N}; N on a log axis since it spans 1 to thousands."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for method, by_n in curves.items():
        # Keys may be strings once the report has been through JSON.
        ns, precisions = zip(*sorted((int(n), float(p)) for n, p in by_n.items()))
        ax.plot(ns, precisions, marker="o", label=method)
    ax.set_xscale("log")
    ax.set(xlabel="N (items retrieved)", ylabel="precision@N", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_code_tsne(codes: np.ndarray, labels: np.ndarray, path: str | Path, *,
                   class_names: Sequence[str] | None = None, max_points: int = 2000, seed: int = 0,
                   title: str = "t-SNE of the hash codes") -> Path:
    """2-D t-SNE of the +-1 codes coloured by class: well-separated islands mean codes that cluster by class.

    Labels are multi-hot [n, C] (coloured by the first class set) or class
    indices [n].  A fixed-seed subsample keeps t-SNE to seconds.
    """
    # Imported here: sklearn is slow to import and only this figure needs it.
    from sklearn.manifold import TSNE

    codes, classes = np.asarray(codes), _first_class(labels)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(codes), min(max_points, len(codes)), replace=False))
    signs = np.unpackbits(codes[keep], axis=1).astype(np.float32) * 2 - 1
    perplexity = min(30.0, (len(keep) - 1) / 3)
    # One thread: once torch's OpenMP runtime is loaded, sklearn's competing
    # one spins against it and t-SNE runs some hundred times slower (measured).
    with threadpool_limits(limits=1):
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(signs)

    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    shown = np.unique(classes[keep])
    colours = _class_colours(len(shown))
    for colour, cls in zip(colours, shown):
        at = classes[keep] == cls
        name = class_names[cls] if class_names is not None else str(cls)
        ax.scatter(embedded[at, 0], embedded[at, 1], s=6, color=colour, label=name)
    if len(shown) <= 20:
        ax.legend(markerscale=2, fontsize="small", loc="best")
    ax.set(title=f"{title} ({len(keep)} points)", xticks=[], yticks=[])
    return _save(fig, path)


def plot_loss_by_stage(records: Sequence[Mapping[str, float]], path: str | Path,
                       *, title: str = "Training loss by continuation stage") -> Path:
    """Loss per iteration with the continuation stages (constant beta) marked.

    HashNet's claim is that continuation converges: within a stage the loss
    falls, and raising beta does not throw it back up.  Vertical lines mark
    where beta changes; a horizontal segment shows each stage's mean loss.
    """
    if not records:
        raise ValueError("no loss records to plot")
    ordered = sorted(records, key=lambda record: record["iteration"])
    iterations = np.array([record["iteration"] for record in ordered], dtype=float)
    losses = np.array([record["loss"] for record in ordered], dtype=float)
    betas = np.array([record["beta"] for record in ordered], dtype=float)

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.plot(iterations, losses, linewidth=0.8, alpha=0.6, label="loss")
    starts = np.flatnonzero(np.r_[True, betas[1:] != betas[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    for stage, (start, end) in enumerate(zip(starts, ends)):
        if start > 0:
            ax.axvline(iterations[start], color="grey", linestyle="--", linewidth=0.8)
        stage_mean = losses[start:end].mean()
        ax.hlines(stage_mean, iterations[start], iterations[end - 1], colors="C3", linewidth=2,
                  label="stage mean" if stage == 0 else None)
        # Vertical, two decimals: ten or more stages side by side stay legible.
        ax.annotate(f"beta {betas[start]:.2f}", (iterations[start], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -4), textcoords="offset points", fontsize="small", rotation=90, va="top")
    ax.set(xlabel="iteration", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def _first_class(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    return labels.astype(np.int64) if labels.ndim == 1 else np.argmax(labels != 0, axis=1)


def _class_colours(count: int) -> np.ndarray:
    if count <= 10:
        return colormaps["tab10"](np.arange(count))
    if count <= 20:
        return colormaps["tab20"](np.arange(count))
    return colormaps["turbo"](np.linspace(0, 1, count))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, format="png")
    return path
