"""The report layer (numbers, JSON, Markdown, figures) and the evaluation CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.evaluate import (
    DEFAULT_TIE_SEED,
    compare_methods,
    evaluate_codes,
    evaluate_features,
    markdown_summary,
    write_report,
)
from model.metrics import (
    mean_average_precision,
    precision_at_n,
    precision_within_radius,
)


def labelled_codes(seed: int, n_queries=20, n_db=120, bits=32, classes=4):
    """Codes near a per-class centre, so the metrics land well away from 0 and 1."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (classes, bits))

    def draw(n):
        cls = rng.integers(0, classes, n)
        flips = rng.random((n, bits)) < 0.25
        return np.packbits(centres[cls] ^ flips, axis=1), np.eye(classes, dtype=np.uint8)[cls]

    query_codes, query_labels = draw(n_queries)
    db_codes, db_labels = draw(n_db)
    return query_codes, query_labels, db_codes, db_labels


def in_tie_order(db_codes: np.ndarray, db_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The database in the order the CLI ranks ties in (a shuffle with the default seed)."""
    order = np.random.default_rng(DEFAULT_TIE_SEED).permutation(len(db_labels))
    return db_codes[order], db_labels[order]


def signs_of(codes: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1


def test_evaluate_codes_reports_the_metric_functions_values():
    q, ql, db, dbl = labelled_codes(0)
    report = evaluate_codes(q, ql, db, dbl, 32, topks=(None, 10), radius=2, ns=(1, 5))
    metrics = report["metrics"]
    assert list(metrics) == ["mAP@all", "mAP@10", "P@H<=2", "empty@H<=2", "P@1", "P@5"]
    assert metrics["mAP@all"] == pytest.approx(mean_average_precision(q, ql, db, dbl))
    assert metrics["mAP@10"] == pytest.approx(mean_average_precision(q, ql, db, dbl, 10))
    assert 0.3 < metrics["mAP@all"] < 1.0
    within = precision_within_radius(q, ql, db, dbl, 2)
    assert (metrics["P@H<=2"], metrics["empty@H<=2"]) == pytest.approx(tuple(within))
    assert report["precision_at_n"] == pytest.approx({str(n): p for n, p in precision_at_n(q, ql, db, dbl, (1, 5)).items()})
    assert report["pr_curve"]["radius"] == list(range(33))
    assert len(report["pr_curve"]["precision"]) == len(report["pr_curve"]["recall"]) == 33
    assert report["pr_curve"]["recall"][-1] == pytest.approx(1.0)


def test_evaluate_codes_checks_the_bit_length():
    q, ql, db, dbl = labelled_codes(0)
    with pytest.raises(ValueError, match="64-bit"):
        evaluate_codes(q, ql, db, dbl, 64)


def test_cosine_on_codes_as_features_equals_hamming():
    """64 bits: unit vectors with entries +-1/8, so every cosine and every tie is exact in float32."""
    q, ql, db, dbl = labelled_codes(1, bits=64)
    as_features = evaluate_features(signs_of(q), ql, signs_of(db), dbl, topks=(None,), ns=(1, 5))
    as_codes = evaluate_codes(q, ql, db, dbl, 64, topks=(None,), ns=(1, 5))
    assert as_features["kind"] == "float" and as_features["dims"] == 64
    assert as_features["metrics"]["mAP@all"] == pytest.approx(as_codes["metrics"]["mAP@all"])
    assert as_features["precision_at_n"] == pytest.approx(as_codes["precision_at_n"])


def comparison():
    q, ql, db, dbl = labelled_codes(2)
    noisy_q, noisy_db = q ^ np.uint8(0b0101_0101), db ^ np.uint8(0b0101_0101)
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((len(q), 8)), rng.standard_normal((len(db), 8)))
    return compare_methods(ql, dbl, codes={"hashnet": (q, db), "flipped": (noisy_q, noisy_db)},
                           features={"cosine": features}, topks=(None, 10), ns=(1, 10))


def test_compare_methods_evaluates_every_method_on_the_same_sets():
    report = comparison()
    assert report["n_queries"] == 20 and report["n_database"] == 120
    assert list(report["methods"]) == ["hashnet", "flipped", "cosine"]
    # Flipping the same bits in every code changes no distance: same numbers.
    assert report["methods"]["flipped"]["metrics"] == report["methods"]["hashnet"]["metrics"]
    assert "P@H<=2" not in report["methods"]["cosine"]["metrics"]
    assert report["conventions"]["queries_without_hits"] == "zero"


def test_ties_rank_in_a_seeded_random_order_not_the_class_sorted_list_order():
    """Every code equal, the database listed class by class: list order would rank class 0 first for everyone."""
    labels = np.eye(2, dtype=np.uint8)
    db_labels = labels[np.repeat([0, 1], 500)]
    all_tied = np.zeros((1000, 1), dtype=np.uint8)

    def map_at_100(query_class: int, tie_seed: int | None) -> dict:
        return compare_methods(labels[[query_class]], db_labels, codes={"hashnet": (all_tied[:1], all_tied)},
                               topks=(100,), ns=(1,), tie_seed=tie_seed)

    assert [map_at_100(c, None)["methods"]["hashnet"]["metrics"]["mAP@100"] for c in (0, 1)] == [1.0, 0.0]
    assert "by database index" in map_at_100(0, None)["conventions"]["ranking"]
    shuffled = [map_at_100(c, 0)["methods"]["hashnet"]["metrics"]["mAP@100"] for c in (0, 1)]
    assert all(0.3 < value < 0.7 for value in shuffled)
    assert "seed 0" in map_at_100(0, 0)["conventions"]["ranking"]
    assert map_at_100(1, 0) == map_at_100(1, 0)  # deterministic


def test_write_report_writes_json_markdown_and_figures(tmp_path):
    report = {**comparison(), "run": {"checkpoint": "ckpt/run1", "data": "grocery"}}
    paths = write_report(report, tmp_path / "out")
    names = sorted(path.name for path in paths)
    assert names == ["precision_at_n.png", "precision_recall.png", "summary.json", "summary.md"]
    for path in paths:
        assert path.parent == tmp_path / "out" and path.stat().st_size > 0

    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["methods"]["hashnet"]["metrics"] == pytest.approx(report["methods"]["hashnet"]["metrics"])
    assert saved["figures"] == ["precision_recall.png", "precision_at_n.png"]

    markdown = (tmp_path / "out" / "summary.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0] == "| method | mAP@all | mAP@10 | P@H<=2 | empty@H<=2 | P@1 | P@10 |"
    assert table[1] == "|---|---|---|---|---|---|---|"
    hashnet_map = report["methods"]["hashnet"]["metrics"]["mAP@all"]
    assert table[2].startswith(f"| hashnet | {hashnet_map:.4f} |")
    # The cosine ceiling has no radius metric: a dash, not a number.
    assert table[4].split(" | ")[3:5] == ["-", "-"]
    assert "- checkpoint: `ckpt/run1`" in markdown
    assert "![precision_recall](precision_recall.png)" in markdown


def test_markdown_lists_figures_made_elsewhere():
    report = {**comparison(), "figures": ["tsne_hashnet.png"]}
    assert "![tsne_hashnet](tsne_hashnet.png)" in markdown_summary(report)


# ------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real checkpoint: EfficientNet-Lite0 (random weights, 32-px inputs) with a 16-bit hash layer."""
    import torch

    from model.backbones import create_backbone
    from model.checkpoint import save_checkpoint
    from model.hashnet import HashNet

    torch.manual_seed(0)
    model = HashNet(create_backbone("efficientnet_lite0", weights=None, input_size=32), bits=16)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny"
    save_checkpoint(path, model, kind="full", label_names=["red", "green", "blue"], training={})
    return path.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """folder:PATH data: 3 classes x 8 noisy single-colour images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for class_id, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir()
        for i in range(8):
            pixels = rng.integers(0, 80, (40, 40, 3))
            pixels[..., class_id] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture
def one_torch_thread():
    """On a shared 2-core machine torch's two OpenMP threads wait on each other: one thread is ~8x faster here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cli_evaluates_a_real_checkpoint_and_reuses_its_cache(tiny_checkpoint, colour_folder, tmp_path, monkeypatch,
                                                               capsys, one_torch_thread):
    from model import evaluate
    from model.data import load_splits
    from model.encoder import Encoder

    out = tmp_path / "report"
    argv = ["--checkpoint", str(tiny_checkpoint), "--data", f"folder:{colour_folder}", "--out", str(out),
            "--baselines", "lsh,itq,pca,cosine", "--topk", "all", "5", "--n", "1", "5", "--batch-size", "8",
            "--tsne", "--device", "cpu"]
    assert evaluate.main(argv) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["hashnet", "lsh", "itq", "pca", "cosine"]
    splits = load_splits(f"folder:{colour_folder}")
    assert (summary["n_queries"], summary["n_database"]) == (len(splits.query), len(splits.database)) == (2, 22)
    encoder = Encoder.from_checkpoint(tiny_checkpoint, device="cpu")
    assert summary["run"]["fingerprint"] == encoder.fingerprint and summary["run"]["bits"] == 16
    for method in summary["methods"].values():
        assert set(method["metrics"]) >= {"mAP@all", "mAP@5", "P@1", "P@5"}
        assert all(0.0 <= value <= 1.0 for value in method["metrics"].values())

    # The report's HashNet numbers are those of the encoder's own codes for these images.
    from PIL import Image

    def codes_of(images):
        return encoder.encode_images([Image.open(path).convert("RGB") for path in images.paths])

    expected = evaluate_codes(codes_of(splits.query), splits.query.labels,
                              *in_tie_order(codes_of(splits.database), splits.database.labels), 16, topks=(None, 5), ns=(1, 5))
    assert summary["methods"]["hashnet"]["metrics"] == pytest.approx(expected["metrics"])
    for name in ["summary.md", "precision_recall.png", "precision_at_n.png", "tsne_hashnet.png"]:
        assert (out / name).stat().st_size > 0
    assert "| hashnet |" in capsys.readouterr().out

    # Same checkpoint, same images: the second run must not encode anything.
    def no_encoding(*args, **kwargs):
        raise AssertionError("the cached codes should have been reused")

    monkeypatch.setattr(evaluate, "encode_images", no_encoding)
    run_dir = training_run(tmp_path / "run")
    assert evaluate.main(argv[:-3] + ["--radius", "1", "--baselines", "itq", "--run-dir", str(run_dir)]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert list(again["methods"]) == ["hashnet", "itq"]
    assert again["methods"]["itq"]["metrics"]["mAP@all"] == summary["methods"]["itq"]["metrics"]["mAP@all"]
    assert "P@H<=1" in again["methods"]["hashnet"]["metrics"]
    assert "loss_by_stage.png" in again["figures"] and (out / "loss_by_stage.png").stat().st_size > 0


def training_run(run_dir):
    """A run directory as model.train leaves it: history.csv with one row per iteration."""
    import csv

    from model.train import HISTORY_FILE

    run_dir.mkdir()
    with open(run_dir / HISTORY_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["iteration", "epoch", "beta", "loss"])
        writer.writeheader()
        writer.writerows({"iteration": i, "epoch": i // 20, "beta": 1 + i // 30, "loss": 1 / (1 + i % 30)}
                         for i in range(90))
    return run_dir


def test_cli_refuses_unknown_baselines(capsys):
    from model import evaluate

    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", "x", "--data", "grocery", "--out", "y", "--baselines", "lsh,sh"])
    assert "unknown baseline(s) sh" in capsys.readouterr().err


def test_cli_refuses_a_run_dir_without_history_before_loading_anything(tmp_path):
    from model import evaluate

    with pytest.raises(SystemExit, match="no training history"):
        evaluate.main(["--checkpoint", str(tmp_path / "absent"), "--data", "grocery", "--out", str(tmp_path / "out"),
                       "--run-dir", str(tmp_path)])


def test_cli_shares_backbone_features_between_checkpoints_with_the_same_backbone(tiny_checkpoint, colour_folder, tmp_path,
                                                                                 monkeypatch, one_torch_thread):
    """Two checkpoints that differ only in the hash layer: with a shared --cache-dir the second evaluation
    encodes nothing, and its HashNet numbers are still those of its own encoder."""
    import torch
    from PIL import Image

    from model import evaluate
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.data import load_splits
    from model.encoder import Encoder

    model = load_checkpoint(tiny_checkpoint).model
    with torch.no_grad():
        model.hash_layer.weight.copy_(torch.randn_like(model.hash_layer.weight))
    other = save_checkpoint(tmp_path / "other", model, kind="full", label_names=["red", "green", "blue"], training={})
    other_path = tmp_path / "other.safetensors"
    assert other != Encoder.from_checkpoint(tiny_checkpoint, device="cpu").fingerprint

    cache = tmp_path / "shared-cache"
    common = ["--data", f"folder:{colour_folder}", "--baselines", "itq", "--topk", "all", "--n", "1",
              "--batch-size", "8", "--device", "cpu", "--cache-dir", str(cache)]
    assert evaluate.main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "a"), *common]) == 0

    def no_encoding(*args, **kwargs):
        raise AssertionError("the shared backbone features should have been reused")

    monkeypatch.setattr(evaluate, "encode_images", no_encoding)
    assert evaluate.main(["--checkpoint", str(other_path), "--out", str(tmp_path / "b"), *common]) == 0
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert second["run"]["fingerprint"] == other
    assert second["methods"]["itq"]["metrics"] == first["methods"]["itq"]["metrics"]

    encoder = Encoder.from_checkpoint(other_path, device="cpu")
    splits = load_splits(f"folder:{colour_folder}")

    def codes_of(images):
        return encoder.encode_images([Image.open(path).convert("RGB") for path in images.paths])

    expected = evaluate_codes(codes_of(splits.query), splits.query.labels,
                              *in_tie_order(codes_of(splits.database), splits.database.labels), 16, topks=(None,), ns=(1,))
    assert second["methods"]["hashnet"]["metrics"] == pytest.approx(expected["metrics"])


def test_cli_with_cached_prefix_stages_reports_the_encoders_own_codes(tiny_checkpoint, colour_folder, tmp_path,
                                                                      one_torch_thread):
    """--prefix-stages caches the first stages' outputs; the codes and features are still the checkpoint's."""
    from PIL import Image

    from model import evaluate
    from model.data import load_splits
    from model.encoder import Encoder

    out = tmp_path / "report"
    argv = ["--checkpoint", str(tiny_checkpoint), "--data", f"folder:{colour_folder}", "--out", str(out),
            "--baselines", "cosine", "--topk", "all", "--n", "1", "--batch-size", "8", "--device", "cpu",
            "--prefix-stages", "5"]
    assert evaluate.main(argv) == 0
    assert len(list((out / "cache" / "prefix").glob("*.npy"))) == 2  # query and database prefix outputs

    encoder = Encoder.from_checkpoint(tiny_checkpoint, device="cpu")
    splits = load_splits(f"folder:{colour_folder}")
    query = [Image.open(path).convert("RGB") for path in splits.query.paths]
    database = [Image.open(path).convert("RGB") for path in splits.database.paths]
    expected = evaluate_codes(encoder.encode_images(query), splits.query.labels,
                              *in_tie_order(encoder.encode_images(database), splits.database.labels), 16, topks=(None,), ns=(1,))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["hashnet"]["metrics"] == pytest.approx(expected["metrics"])
