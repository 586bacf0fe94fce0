"""Labelled image sets (paths + multi-hot labels + class names) and their splits.

Every source ends up as `LabelledImages`; a data spec string
(`grocery`, `cifar10`, `folder:PATH`, `list:FILE`) names train, query and
database splits for training and quick evaluation.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model.preprocess import Transform

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}

# The published CIFAR-10 split: from all 60,000 images, per class (in sorted
# class order) one permutation drawn from numpy.random.default_rng(0); its
# first 100 images are queries, the next 500 training images, the rest
# (54,000 in all) the database.
CIFAR10_SPLIT_SEED = 0
CIFAR10_QUERIES_PER_CLASS = 100
CIFAR10_TRAIN_PER_CLASS = 500

# folder: and list: sources have no given split: this fraction, drawn with
# this seed, becomes the queries; the rest is both training set and database.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0


def default_data_dir() -> Path:
    """DEEPHASH_DATA_DIR, else ../shared/data next to the repository."""
    return Path(os.environ.get("DEEPHASH_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


@dataclass(frozen=True)
class LabelledImages:
    paths: list[Path]
    labels: np.ndarray  # [N, C] uint8 multi-hot
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.paths), len(self.class_names)):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {len(self.paths)} images x {len(self.class_names)} classes"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledImages:
        indices = np.asarray(indices, dtype=np.int64)
        return LabelledImages([self.paths[i] for i in indices], self.labels[indices], self.class_names)


@dataclass(frozen=True)
class DataSplits:
    """Training images, and the query/database pair that retrieval is measured on."""

    train: LabelledImages
    query: LabelledImages
    database: LabelledImages


def multi_hot(label_lists: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    labels = np.zeros((len(label_lists), num_classes), dtype=np.uint8)
    for row, label_ids in enumerate(label_lists):
        labels[row, list(label_ids)] = 1
    return labels


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_folder(root: str | Path) -> LabelledImages:
    """root/<class>/**/<image>: one label per image, classes in sorted order."""
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not class_dirs:
        raise ValueError(f"no class folders in {root}")
    paths, label_lists = [], []
    for class_id, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        paths += files
        label_lists += [[class_id]] * len(files)
    return LabelledImages(paths, multi_hot(label_lists, len(class_dirs)), [d.name for d in class_dirs])


def _sorted_label_names(names: set[str]) -> list[str]:
    """Numeric labels sort as numbers, others as strings."""
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def list_file(path: str | Path) -> LabelledImages:
    """Lines `path label[,label...]` (multi-label); relative paths are relative
    to the list file; blank lines and lines starting with # are skipped."""
    path = Path(path)
    entries: list[tuple[Path, list[str]]] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{line_number}: expected 'path label[,label...]', got {line!r}")
        image_path, labels = parts
        entries.append((path.parent / image_path, [label for label in labels.split(",") if label]))
    class_names = _sorted_label_names({label for _, labels in entries for label in labels})
    class_ids = {name: i for i, name in enumerate(class_names)}
    label_lists = [[class_ids[label] for label in labels] for _, labels in entries]
    return LabelledImages([p for p, _ in entries], multi_hot(label_lists, len(class_names)), class_names)


def grocery(root: str | Path, split: str) -> LabelledImages:
    """The Grocery Store data set's train or test split with its 81 fine classes.

    `root` holds dataset/{train,test}.txt (`path, fine_label, coarse_label`)
    and dataset/classes.csv.
    """
    dataset = Path(root) / "dataset"
    with open(dataset / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    class_names = [name for name, _ in sorted(((row[0], int(row[1])) for row in rows), key=lambda r: r[1])]
    paths, label_lists = [], []
    for line in (dataset / f"{split}.txt").read_text().splitlines():
        if line.strip():
            image_path, fine_label, _coarse = (field.strip() for field in line.split(","))
            paths.append(dataset / image_path)
            label_lists.append([int(fine_label)])
    return LabelledImages(paths, multi_hot(label_lists, len(class_names)), class_names)


def cifar10_protocol(root: str | Path, seed: int = CIFAR10_SPLIT_SEED) -> DataSplits:
    """The deep-hashing "cifar10" protocol over root/{train,test}/<class>/*.jpg:
    1,000 queries, 5,000 training images, a 54,000-image database that
    excludes both (see CIFAR10_SPLIT_SEED)."""
    root = Path(root)
    class_names = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[list[Path], list[list[int]]]] = {name: ([], []) for name in ("query", "train", "database")}
    for class_id, class_name in enumerate(class_names):
        pool = sorted((root / "train" / class_name).glob("*.jpg")) + sorted((root / "test" / class_name).glob("*.jpg"))
        order = rng.permutation(len(pool))
        boundaries = {
            "query": order[:CIFAR10_QUERIES_PER_CLASS],
            "train": order[CIFAR10_QUERIES_PER_CLASS : CIFAR10_QUERIES_PER_CLASS + CIFAR10_TRAIN_PER_CLASS],
            "database": order[CIFAR10_QUERIES_PER_CLASS + CIFAR10_TRAIN_PER_CLASS :],
        }
        for name, indices in boundaries.items():
            splits[name][0].extend(pool[i] for i in indices)
            splits[name][1].extend([[class_id]] * len(indices))
    images = {
        name: LabelledImages(paths, multi_hot(label_lists, len(class_names)), class_names)
        for name, (paths, label_lists) in splits.items()
    }
    return DataSplits(train=images["train"], query=images["query"], database=images["database"])


def holdout_splits(images: LabelledImages, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED) -> DataSplits:
    """Queries are a seeded random `fraction` of the images; the rest trains and is the database."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_query = max(1, round(fraction * len(images)))
    rest = images.subset(np.sort(order[n_query:]))
    return DataSplits(train=rest, query=images.subset(np.sort(order[:n_query])), database=rest)


def load_splits(spec: str, data_dir: str | Path | None = None) -> DataSplits:
    """Resolve a data spec: grocery | cifar10 | folder:PATH | list:FILE.

    grocery trains on train.txt and measures test.txt queries against the
    training images; cifar10 follows `cifar10_protocol`.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    kind, _, argument = spec.partition(":")
    if kind == "grocery" and not argument:
        train = grocery(data_dir / "grocery", "train")
        return DataSplits(train=train, query=grocery(data_dir / "grocery", "test"), database=train)
    if kind == "cifar10" and not argument:
        return cifar10_protocol(data_dir / "cifar10")
    if kind == "folder" and argument:
        return holdout_splits(image_folder(argument))
    if kind == "list" and argument:
        return holdout_splits(list_file(argument))
    raise ValueError(f"unknown data spec {spec!r}: expected grocery, cifar10, folder:PATH or list:FILE")


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class ImageDataset(Dataset):
    """(preprocessed image tensor, float multi-hot label) pairs, loaded with PIL."""

    def __init__(self, images: LabelledImages, transform: Transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_image(self.images.paths[index])
        return self.transform(image), torch.from_numpy(self.images.labels[index].astype(np.float32))
