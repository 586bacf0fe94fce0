"""Evaluation reports: retrieval metrics for HashNet codes next to baselines, as JSON, Markdown and figures.

Two layers.  The pure one (evaluate_codes, evaluate_features, compare_methods,
write_report) takes arrays and returns JSON-serialisable dicts, so it is
tested without a network.  The CLI (main) encodes a data set with a
checkpoint's encoder and feeds the pure layer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model import plots
from model.baselines import ITQ, LSH, LinearHash, SignPCA
from model.data import ImageDataset, LabelledImages, load_splits
from model.encoder import Encoder, inference_batch_size
from model.feature_cache import cached_outputs, prefix_name
from model.metrics import (
    QueriesWithoutHits,
    precision_recall_curve,
    precision_within_radius,
    ranking_metrics,
    ranking_metrics_float,
)
from model.train import read_history

DEFAULT_TOPKS: tuple[int | None, ...] = (None, 1000)
DEFAULT_NS: tuple[int, ...] = (1, 10, 100, 1000)
DEFAULT_RADIUS = 2
DEFAULT_TIE_SEED = 0

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
    tie_seed: int | None = DEFAULT_TIE_SEED,
) -> dict[str, Any]:
    """One report over the same queries and database for several methods.

    `codes` maps a method name to (query codes, database codes), `features` to
    (query features, database features) ranked by cosine.  Equal distances
    are ranked in database order, which with `tie_seed` is a seeded shuffle
    of it: data lists are often sorted by class (CIFAR-10's and grocery's
    are), and breaking the thousands of ties that 64-bit codes of one class
    share by list position would rank the lowest class ids first.
    """
    if tie_seed is not None:
        order = np.random.default_rng(tie_seed).permutation(len(db_labels))
        db_labels = np.asarray(db_labels)[order]
        codes = {name: (query, np.asarray(db)[order]) for name, (query, db) in (codes or {}).items()}
        features = {name: (query, np.asarray(db)[order]) for name, (query, db) in (features or {}).items()}
    methods: dict[str, Any] = {}
    for name, (query_codes, db_codes) in (codes or {}).items():
        methods[name] = evaluate_codes(query_codes, query_labels, db_codes, db_labels, np.asarray(db_codes).shape[1] * 8,
                                       topks=topks, radius=radius, ns=ns, queries_without_hits=queries_without_hits)
    for name, (query_feats, db_feats) in (features or {}).items():
        methods[name] = evaluate_features(query_feats, query_labels, db_feats, db_labels,
                                          topks=topks, ns=ns, queries_without_hits=queries_without_hits)
    return {
        "n_queries": len(query_labels),
        "n_database": len(db_labels),
        "relevance": "query and database item share at least one label",
        "conventions": {
            "ranking": "Hamming distance ascending (cosine descending for float features); ties "
                       + ("by database index ascending" if tie_seed is None
                          else f"in a random order of the database (seed {tie_seed}), the same for every method"),
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


# ------------------------------------------------------------------------ CLI

# Each baseline is built from (bits, seed) and fitted on the training split's features.
HASH_BASELINES: dict[str, Callable[[int, int], LinearHash]] = {
    "lsh": lambda bits, seed: LSH(bits, seed=seed),
    "itq": lambda bits, seed: ITQ(bits, seed=seed),
    "pca": lambda bits, seed: SignPCA(bits),
}
FLOAT_BASELINES = ("cosine",)
CACHE_DIR_NAME = "cache"


@dataclass(frozen=True)
class Encoded:
    """One split run through the encoder: HashNet codes and the pooled backbone features they come from."""

    codes: np.ndarray
    features: np.ndarray


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    out_dir = Path(args.out)
    history = _training_history(args.run_dir) if args.run_dir is not None else None
    encoder = load_encoder(args.checkpoint, args.device)
    splits = load_splits(args.data, args.data_dir)
    needs_training_split = any(name in HASH_BASELINES for name in args.baselines)

    cache_dir = Path(args.cache_dir) if args.cache_dir is not None else out_dir / CACHE_DIR_NAME
    encode = partial(_encode_cached, encoder, cache_dir=cache_dir, batch_size=args.batch_size, workers=args.workers,
                     prefix_stages=args.prefix_stages)
    query, database = encode("query", splits.query), encode("database", splits.database)
    train = None
    if needs_training_split:
        # grocery, folder: and list: train on the database itself: encode it once.
        train = database if splits.train.paths == splits.database.paths else encode("train", splits.train)

    codes = {"hashnet": (query.codes, database.codes)}
    features = {}
    for name in args.baselines:
        if name in HASH_BASELINES:
            method = HASH_BASELINES[name](encoder.bits, args.seed).fit(train.features)
            codes[name] = (method.encode(query.features), method.encode(database.features))
        else:
            features[name] = (query.features, database.features)
    report = compare_methods(splits.query.labels, splits.database.labels, codes=codes, features=features,
                             topks=args.topk, radius=args.radius, ns=args.n,
                             queries_without_hits=args.queries_without_hits, tie_seed=args.tie_seed)
    report["run"] = {
        "checkpoint": str(args.checkpoint),
        "fingerprint": encoder.fingerprint,
        "bits": encoder.bits,
        "data": args.data,
        "baselines fitted on": f"training split, {len(splits.train)} images" if needs_training_split else "-",
    }
    report["figures"] = _extra_figures(args, out_dir, database.codes, splits.database, history)
    for path in [*write_report(report, out_dir), *(out_dir / name for name in report["figures"])]:
        print(path)
    print(markdown_summary({**report, "figures": []}), end="")
    return 0


def load_encoder(checkpoint: str | Path, device: str | None) -> Encoder:
    return Encoder.from_checkpoint(checkpoint, device=device)


def encode_images(encoder: Encoder, images: LabelledImages, *, batch_size: int = 64, workers: int = 0,
                  prefix_stages: int = 0, prefix_cache_dir: Path | None = None) -> Encoded:
    """Run every image through the checkpoint's own eval transform and encoder, in file order.

    One backbone pass gives both: the codes are the hash layer of the same
    features. With `prefix_stages`, the outputs of the backbone's first stages
    come from (or go to) the prefix cache in `prefix_cache_dir`, keyed by those
    stages' weights, so checkpoints that kept the same stages fixed in training
    (and the ImageNet backbone itself) compute them once per image set.
    """
    if prefix_stages:
        outputs = cached_outputs(
            encoder.backbone_prefix(prefix_stages), prefix_name(encoder.metadata["backbone"]["name"], prefix_stages),
            encoder.preprocess, images, prefix_cache_dir, device=encoder.device,
            batch_size=inference_batch_size(encoder.device, encoder.preprocess.input_size), workers=workers,
        )
        starts = tqdm(range(0, len(images), batch_size), desc=f"encoding {len(images)} images from stage {prefix_stages}",
                      unit="batch", leave=False)
        parts = [encoder.encode_from_stage(torch.from_numpy(np.array(outputs[start:start + batch_size])), prefix_stages)
                 for start in starts]
    else:
        loader = DataLoader(ImageDataset(images, encoder.preprocess_image), batch_size=batch_size, num_workers=workers)
        parts = [encoder.encode_with_features(batch)
                 for batch, _labels in tqdm(loader, desc=f"encoding {len(images)} images", unit="batch", leave=False)]
    return Encoded(np.concatenate([codes for codes, _ in parts]), np.concatenate([features for _, features in parts]))


def _encode_cached(encoder: Encoder, name: str, images: LabelledImages, *, cache_dir: Path, batch_size: int,
                   workers: int, prefix_stages: int = 0) -> Encoded:
    """Encode a split, or reuse a cached copy of its backbone features.

    Encoding is the slow part (minutes on the CPU for the CIFAR-10 database).
    The file is keyed by the backbone (tensors and preprocessing) and the image
    list, not by the whole checkpoint: re-running with other metrics or
    baselines takes seconds, and so does every head-only checkpoint over the
    same backbone when evaluations share --cache-dir (the hash layer is
    applied to the cached features). Codes computed with the features are
    kept under the checkpoint's fingerprint.
    """
    cached = read_cached_encoding(encoder, name, images, cache_dir)
    if cached is not None:
        return cached
    encoded = encode_images(encoder, images, batch_size=batch_size, workers=workers, prefix_stages=prefix_stages,
                            prefix_cache_dir=cache_dir / "prefix")
    key, path = _cache_file(encoder, name, images, cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.npz")
    np.savez(temporary, key=np.array(key), fingerprint=np.array(encoder.fingerprint), codes=encoded.codes,
             features=encoded.features)
    temporary.replace(path)
    return encoded


def read_cached_encoding(encoder: Encoder, name: str, images: LabelledImages, cache_dir: Path) -> Encoded | None:
    """The split `name` as an evaluation with this cache dir stored it (None if it did not): the
    features of this encoder's backbone, and this checkpoint's codes of them."""
    key, path = _cache_file(encoder, name, images, cache_dir)
    if not path.is_file():
        return None
    with np.load(path) as cached:
        if str(cached["key"]) != key:
            return None
        features = cached["features"]
        same_head = str(cached["fingerprint"]) == encoder.fingerprint
        return Encoded(cached["codes"] if same_head else encoder.codes_from_features(features), features)


def _cache_file(encoder: Encoder, name: str, images: LabelledImages, cache_dir: Path) -> tuple[str, Path]:
    key = _cache_key(encoder.backbone_fingerprint, images.paths)
    return key, cache_dir / f"{name}-{key[:16]}.npz"


def _cache_key(backbone_fingerprint: str, paths: Sequence[Path]) -> str:
    digest = hashlib.sha256(backbone_fingerprint.encode())
    for path in paths:
        digest.update(b"\0" + str(Path(path).resolve()).encode())
    return digest.hexdigest()


def _training_history(run_dir: Path) -> list[dict[str, float]]:
    """Read before any encoding, so that a wrong --run-dir fails in a second, not after minutes."""
    history = read_history(run_dir)
    if not history:
        raise SystemExit(f"no training history in {run_dir}: --run-dir must be a model.train output directory")
    return history


def _extra_figures(args: argparse.Namespace, out_dir: Path, db_codes: np.ndarray, database: LabelledImages,
                   history: list[dict[str, float]] | None) -> list[str]:
    figures = []
    if args.tsne:
        figures.append(plots.plot_code_tsne(db_codes, database.labels, out_dir / "tsne_hashnet.png",
                                            class_names=database.class_names, seed=args.seed).name)
    if history is not None:
        figures.append(plots.plot_loss_by_stage(history, out_dir / "loss_by_stage.png").name)
    return figures


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deephash-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the .safetensors file or its directory")
    parser.add_argument("--data", required=True, help="grocery | cifar10 | folder:PATH | list:FILE")
    parser.add_argument("--data-dir", default=None, help="folder holding grocery/ and cifar10/ "
                                                         "(default: DEEPHASH_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", required=True, help="where the report, figures and encoded cache go")
    parser.add_argument("--baselines", type=_baseline_list, default=_baseline_list("lsh,itq,cosine"),
                        help=f"comma-separated, from {', '.join([*HASH_BASELINES, *FLOAT_BASELINES])}; "
                             "'none' for HashNet alone (default: lsh,itq,cosine)")
    parser.add_argument("--topk", type=_topk, nargs="+", default=list(DEFAULT_TOPKS),
                        help="R values for mAP@R; 'all' ranks the whole database (default: all 1000)")
    parser.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS), help="N values for precision@N")
    parser.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="Hamming radius for P@H<=r")
    parser.add_argument("--queries-without-hits", choices=["zero", "skip"], default="zero",
                        help="AP of a query with nothing relevant in its top R: 0 (default) or left out of the mean")
    parser.add_argument("--tie-seed", type=_tie_seed, default=DEFAULT_TIE_SEED,
                        help="equal distances rank in a random order of the database with this seed, or in "
                             "database order with 'none' (default: 0; data lists sorted by class bias the latter)")
    parser.add_argument("--tsne", action="store_true", help="also draw a t-SNE map of database codes")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="a training run directory: draw its loss per continuation stage")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    parser.add_argument("--prefix-stages", type=int, default=0,
                        help="keep the outputs of the backbone's first N stages in CACHE_DIR/prefix, keyed by their "
                             "weights: checkpoints fine-tuned with --freeze-stages N (and head-only ones) then share them")
    parser.add_argument("--cache-dir", default=None,
                        help="where encoded features are kept (default: OUT/cache); evaluations that share it "
                             "encode each backbone's images once (head-only checkpoints share their backbone)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of LSH, ITQ and the t-SNE subsample")
    return parser.parse_args(argv)


def _baseline_list(text: str) -> list[str]:
    names = [] if text.strip() == "none" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - {*HASH_BASELINES, *FLOAT_BASELINES})
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {', '.join(unknown)}")
    return names


def _tie_seed(text: str) -> int | None:
    return None if text == "none" else int(text)


def _topk(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"topk must be a positive integer or 'all', got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
