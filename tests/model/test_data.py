"""Image sets: grocery, the CIFAR-10 protocol, folder trees, multi-label list files."""
import numpy as np
import pytest
import torch
from PIL import Image

from model.data import (
    CIFAR10_QUERIES_PER_CLASS,
    CIFAR10_TRAIN_PER_CLASS,
    ImageDataset,
    cifar10_protocol,
    grocery,
    image_folder,
    list_file,
    load_splits,
)
from model.preprocess import PreprocessConfig, eval_transform


def test_grocery_has_81_fine_classes(shared_data):
    train, test = grocery(shared_data / "grocery", "train"), grocery(shared_data / "grocery", "test")
    assert (len(train), len(test)) == (2640, 2485)
    assert len(train.class_names) == 81 and train.class_names[:2] == ["Golden-Delicious", "Granny-Smith"]
    assert (train.labels.sum(axis=1) == 1).all() and train.labels.sum(axis=0).min() > 0
    assert all(p.is_file() for p in train.paths[:20])


def test_cifar10_protocol_sizes_and_disjointness(shared_data):
    splits = cifar10_protocol(shared_data / "cifar10")
    assert (len(splits.query), len(splits.train), len(splits.database)) == (1000, 5000, 54000)
    assert (splits.query.labels.sum(axis=0) == CIFAR10_QUERIES_PER_CLASS).all()
    assert (splits.train.labels.sum(axis=0) == CIFAR10_TRAIN_PER_CLASS).all()
    query, train, database = (set(s.paths) for s in (splits.query, splits.train, splits.database))
    assert not (query & train) and not (query & database) and not (train & database)
    assert len(query | train | database) == 60000
    again = cifar10_protocol(shared_data / "cifar10")
    assert again.query.paths == splits.query.paths and again.train.paths == splits.train.paths
    assert cifar10_protocol(shared_data / "cifar10", seed=1).query.paths != splits.query.paths


def _write_image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def test_image_folder_labels_by_directory(tmp_path):
    _write_image(tmp_path / "cats" / "a.jpg", "red")
    _write_image(tmp_path / "cats" / "nested" / "b.png", "red")
    _write_image(tmp_path / "dogs" / "c.jpg", "blue")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    images = image_folder(tmp_path)
    assert images.class_names == ["cats", "dogs"]
    assert [p.name for p in images.paths] == ["a.jpg", "b.png", "c.jpg"]
    assert images.labels.tolist() == [[1, 0], [1, 0], [0, 1]]


def test_list_file_supports_multiple_labels(tmp_path):
    _write_image(tmp_path / "img" / "one.jpg", "red")
    _write_image(tmp_path / "img" / "two words.jpg", "green")
    (tmp_path / "list.txt").write_text("# comment\nimg/one.jpg 2\n\nimg/two words.jpg 10,2\n")
    images = list_file(tmp_path / "list.txt")
    assert images.class_names == ["2", "10"]
    assert images.labels.tolist() == [[1, 0], [1, 1]]
    assert images.paths[1] == tmp_path / "img" / "two words.jpg"


def test_list_and_folder_specs_hold_out_queries(tmp_path):
    for i in range(20):
        _write_image(tmp_path / f"c{i % 2}" / f"{i}.jpg", "red")
    splits = load_splits(f"folder:{tmp_path}")
    assert (len(splits.query), len(splits.train)) == (2, 18)
    assert splits.database is splits.train and not set(splits.query.paths) & set(splits.train.paths)
    with pytest.raises(ValueError, match="unknown data spec"):
        load_splits("imagenet")


def test_dataset_returns_preprocessed_tensor_and_multi_hot(tmp_path):
    _write_image(tmp_path / "a" / "x.jpg", (127, 127, 127))
    config = PreprocessConfig(input_size=16, resize_size=18, mean=(127.0,) * 3, std=(128.0,) * 3)
    image, label = ImageDataset(image_folder(tmp_path), eval_transform(config))[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert np.abs(image.numpy()).max() < 0.05  # mid-grey maps to ~0 under (pixel - 127) / 128
    assert label.tolist() == [1.0]
