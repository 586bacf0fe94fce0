"""Evaluation reports: retrieval metrics for HashNet codes next to baselines, as JSON, Markdown and figures.

Two layers.  The pure one (evaluate_codes, evaluate_features, compare_methods,
write_report) takes arrays and returns JSON-serialisable dicts, so it is
tested without a network.  The CLI (main) encodes a data set with a
checkpoint's encoder and feeds the pure layer.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model import plots
from model.metrics import (
    QueriesWithoutHits,
    precision_recall_curve,
    precision_within_radius,
    ranking_metrics,
    ranking_metrics_float,
)

DEFAULT_TOPKS: tuple[int | None, ...] = (None, 1000)
DEFAULT_NS: tuple[int, ...] = (1, 10, 100, 1000)
DEFAULT_RADIUS = 2

# ------------------------------------------------------------------ pure layer


def evaluate_codes(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    bits: int,
    *,
    topks: Sequence[int | None] = DEFAULT_TOPKS,
    radius: int = DEFAULT_RADIUS,
    ns: Sequence[int] = DEFAULT_NS,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> dict[str, Any]:
    """Every metric of one hashing method: mAP@R, P@H<=radius, precision@N and the PR curve."""
    if np.asarray(query_codes).shape[1:] != (bits // 8,) or bits % 8:
        raise ValueError(f"{bits}-bit codes must be uint8 [n, {bits // 8}], got {np.asarray(query_codes).shape}")
    ranked = ranking_metrics(query_codes, query_labels, db_codes, db_labels, topks, ns,
                             queries_without_hits=queries_without_hits)
    within = precision_within_radius(query_codes, query_labels, db_codes, db_labels, radius)
    curve = precision_recall_curve(query_codes, query_labels, db_codes, db_labels)
    metrics = _map_entries(ranked.mean_average_precision)
    metrics[f"P@H<={radius}"] = within.precision
    metrics[f"empty@H<={radius}"] = within.empty_fraction
    metrics.update(_precision_entries(ranked.precision_at_n))
    return {
        "kind": "hash",
        "bits": int(bits),
        "metrics": metrics,
        "precision_at_n": {str(n): p for n, p in ranked.precision_at_n.items()},
        "pr_curve": {field: values.tolist() for field, values in curve._asdict().items()},
    }


def evaluate_features(
    query_feats: np.ndarray,
    query_labels: np.ndarray,
    db_feats: np.ndarray,
    db_labels: np.ndarray,
    *,
    topks: Sequence[int | None] = DEFAULT_TOPKS,
    ns: Sequence[int] = DEFAULT_NS,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> dict[str, Any]:
    """mAP@R and precision@N by cosine similarity of float features: the ceiling that codes approximate."""
    ranked = ranking_metrics_float(query_feats, query_labels, db_feats, db_labels, topks, ns,
                                   queries_without_hits=queries_without_hits)
    metrics = _map_entries(ranked.mean_average_precision)
    metrics.update(_precision_entries(ranked.precision_at_n))
    return {
        "kind": "float",
        "dims": int(np.asarray(query_feats).shape[1]),
        "metrics": metrics,
        "precision_at_n": {str(n): p for n, p in ranked.precision_at_n.items()},
    }


def compare_methods(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    codes: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    features: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    topks: Sequence[int | None] = DEFAULT_TOPKS,
    radius: int = DEFAULT_RADIUS,
    ns: Sequence[int] = DEFAULT_NS,
    queries_without_hits: QueriesWithoutHits = "zero",
) -> dict[str, Any]:
    """One report over the same queries and database for several methods.

    `codes` maps a method name to (query codes, database codes), `features` to
    (query features, database features) ranked by cosine.
    """
    methods: dict[str, Any] = {}
    for name, (query_codes, db_codes) in (codes or {}).items():
        methods[name] = evaluate_codes(query_codes, query_labels, db_codes, db_labels, np.asarray(db_codes).shape[1] * 8,
                                       topks=topks, radius=radius, ns=ns, queries_without_hits=queries_without_hits)
    for name, (query_feats, db_feats) in (features or {}).items():
        methods[name] = evaluate_features(query_feats, query_labels, db_feats, db_labels,
                                          topks=topks, ns=ns, queries_without_hits=queries_without_hits)
    return {
        "n_queries": int(len(query_labels)),
        "n_database": int(len(db_labels)),
        "relevance": "query and database item share at least one label",
        "conventions": {
            "ranking": "Hamming distance ascending (cosine descending for float features); "
                       "ties by database index ascending, the index's own order",
            "queries_without_hits": queries_without_hits,
            "empty_radius_result": "precision 0 (empty@H<=r is the fraction of such queries)",
        },
        "methods": methods,
    }


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """summary.json, summary.md and the comparison figures in out_dir; returns their paths.

    Figures already in ``report["figures"]`` (file names inside out_dir, such
    as a t-SNE map) are listed in the Markdown next to the ones drawn here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = report["methods"]
    written: list[Path] = []
    curves = {name: method["pr_curve"] for name, method in methods.items() if "pr_curve" in method}
    if curves:
        written.append(plots.plot_precision_recall(curves, out_dir / "precision_recall.png"))
    by_n = {name: method["precision_at_n"] for name, method in methods.items() if method.get("precision_at_n")}
    if by_n:
        written.append(plots.plot_precision_at_n(by_n, out_dir / "precision_at_n.png"))
    figures = [*report.get("figures", []), *(path.name for path in written)]
    report = {**report, "figures": figures}

    json_path = out_dir / "summary.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    md_path = out_dir / "summary.md"
    md_path.write_text(markdown_summary(report))
    return [json_path, md_path, *written]


def markdown_summary(report: Mapping[str, Any]) -> str:
    """A methods x metrics table, the conventions behind the numbers and links to the figures."""
    methods = report["methods"]
    columns = list(dict.fromkeys(key for method in methods.values() for key in method["metrics"]))
    lines = ["# Retrieval evaluation", ""]
    for key, value in report.get("run", {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        f"- queries: {report['n_queries']}, database items: {report['n_database']}",
        f"- relevance: {report['relevance']}",
        *(f"- {name.replace('_', ' ')}: {rule}" for name, rule in report["conventions"].items()),
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, method in methods.items():
        cells = [_format(method["metrics"].get(column)) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in report["figures"]]
    return "\n".join(lines) + "\n"


def _map_entries(maps: Mapping[int | None, float]) -> dict[str, float]:
    return {f"mAP@{'all' if topk is None else topk}": float(value) for topk, value in maps.items()}


def _precision_entries(precisions: Mapping[int, float]) -> dict[str, float]:
    return {f"P@{n}": float(value) for n, value in precisions.items()}


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
