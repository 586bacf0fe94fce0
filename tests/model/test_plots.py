"""Every figure is a real, non-trivial PNG file at the path asked for."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, expected: Path) -> None:
    assert path == expected
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        width, height = image.size
        # More than one colour: something was drawn, not just a blank canvas.
        assert width > 200 and height > 200
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 10


def test_precision_recall_plot(tmp_path):
    curves = {
        "hashnet": {"precision": [0.9, 0.8, 0.5, 0.1], "recall": [0.1, 0.3, 0.7, 1.0]},
        "itq": {"precision": [0.5, 0.4, 0.2, 0.1], "recall": [0.05, 0.2, 0.6, 1.0]},
    }
    assert_png(plots.plot_precision_recall(curves, tmp_path / "pr.png"), tmp_path / "pr.png")


def test_precision_at_n_plot_accepts_json_string_keys(tmp_path):
    curves = {"hashnet": {1: 0.9, 10: 0.85, 100: 0.8}, "lsh": {"1": 0.3, "10": 0.25, "100": 0.2}}
    assert_png(plots.plot_precision_at_n(curves, tmp_path / "sub" / "pn.png"), tmp_path / "sub" / "pn.png")


def test_tsne_plot_of_codes(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (3, 32))
    classes = rng.integers(0, 3, 150)
    flips = rng.random((150, 32)) < 0.1
    codes = np.packbits(centres[classes] ^ flips, axis=1)
    path = plots.plot_code_tsne(codes, np.eye(3, dtype=int)[classes], tmp_path / "tsne.png",
                                class_names=["apple", "milk", "juice"], max_points=120)
    assert_png(path, tmp_path / "tsne.png")


def test_loss_by_stage_plot(tmp_path):
    records = [{"iteration": i, "loss": 1.0 / (1 + i % 50) + 0.2, "beta": 1.0 + (i // 50)} for i in range(200)]
    assert_png(plots.plot_loss_by_stage(records, tmp_path / "loss.png"), tmp_path / "loss.png")
    with pytest.raises(ValueError, match="no loss records"):
        plots.plot_loss_by_stage([], tmp_path / "empty.png")
