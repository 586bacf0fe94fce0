"""Catalogues on disk: list files and folders into ids, metadata and image URLs."""
from __future__ import annotations

import pytest

from service.catalogue import read_catalogue


def test_grocery_list_file_gives_class_names_and_image_urls(shared_data):
    items = read_catalogue(shared_data / "grocery" / "dataset" / "train.txt", "/catalogue/")
    assert len(items) == 2640 and len({i.id for i in items}) == 2640
    first = items[0]
    assert first.id == "train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg"
    assert first.metadata == {"name": "Golden-Delicious", "category": "Apple", "image": "/catalogue/" + first.id}
    assert first.source == shared_data / "grocery" / "dataset" / first.id and first.source.is_file()


def test_folder_ids_are_relative_paths(tmp_path):
    (tmp_path / "shelf a").mkdir()
    (tmp_path / "shelf a" / "milk 1.jpg").write_bytes(b"x")
    (tmp_path / "top.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    items = read_catalogue(tmp_path, "https://cdn.example/")
    assert [(i.id, i.metadata) for i in items] == [
        ("shelf a/milk 1.jpg", {"name": "milk 1", "category": "shelf a", "image": "https://cdn.example/shelf%20a/milk%201.jpg"}),
        ("top.PNG", {"name": "top", "image": "https://cdn.example/top.PNG"})]


def test_list_file_paths_must_stay_inside_its_folder(tmp_path):
    (tmp_path / "list.txt").write_text("ok.jpg, 1\n../secret.jpg, 2\n")
    with pytest.raises(ValueError, match="list.txt:2"):
        read_catalogue(tmp_path / "list.txt")


def test_list_file_without_classes_keeps_the_label(tmp_path):
    (tmp_path / "list.txt").write_text("a/b.jpg, 7\n\nc.jpg\n")
    items = read_catalogue(tmp_path / "list.txt")
    assert [(i.id, i.metadata) for i in items] == [("a/b.jpg", {"label": "7"}), ("c.jpg", {"name": "c"})]
