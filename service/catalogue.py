"""Catalogues on disk: a folder of images, or a list file of `path[, fine label[, coarse label]]` lines.

Item ids are the images' paths relative to the folder (or to the list
file's directory).  Metadata comes from the list file, with label ids turned
into names when a `classes.csv` (name, id, coarse name, coarse id; the
grocery data set's layout) sits beside it, or else from the path.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
# Where the app serves the sample catalogue's files; its items' metadata["image"] points there.
CATALOGUE_URL = "/catalogue/"


@dataclass(frozen=True)
class CatalogueItem:
    id: str
    metadata: dict[str, Any]
    source: bytes | Path  # the image's bytes, or the file holding them


def catalogue_root(source: Path) -> Path:
    """The directory the catalogue's relative paths start from."""
    return source if source.is_dir() else source.parent


def read_catalogue(source: Path, image_url_prefix: str | None = None) -> list[CatalogueItem]:
    """Items of a folder or list file; with `image_url_prefix`, metadata["image"] is prefix + relative path."""
    if source.is_dir():
        entries = [(p.relative_to(source).as_posix(), _path_metadata(p.relative_to(source)))
                   for p in sorted(source.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    elif source.is_file():
        entries = _list_file_entries(source)
    else:
        raise FileNotFoundError(f"catalogue {source} is neither a folder nor a list file")
    root = catalogue_root(source)
    items = []
    for relative, metadata in entries:
        if image_url_prefix is not None:
            metadata["image"] = image_url_prefix + quote(relative)
        items.append(CatalogueItem(relative, metadata, root / relative))
    return items


def _path_metadata(relative: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": relative.stem}
    if relative.parent.name:
        metadata["category"] = relative.parent.name
    return metadata


def _list_file_entries(list_file: Path) -> list[tuple[str, dict[str, Any]]]:
    classes = _read_classes(list_file.parent / "classes.csv")
    entries = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")]
        if not fields[0]:
            continue
        relative, labels = fields[0], fields[1:]
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ValueError(f"{list_file}:{number}: paths must stay inside the list's folder, got {relative!r}")
        entries.append((relative, _label_metadata(labels, classes) if labels else _path_metadata(Path(relative))))
    return entries


def _label_metadata(labels: list[str], classes: dict[str, tuple[str, str]]) -> dict[str, Any]:
    if labels[0] in classes:
        name, category = classes[labels[0]]
        return {"name": name, "category": category}
    return {"label": labels[0]}


def _read_classes(path: Path) -> dict[str, tuple[str, str]]:
    """Fine label id -> (fine name, coarse name), from a grocery-style classes.csv."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {row[1].strip(): (row[0].strip(), row[2].strip()) for row in rows if len(row) >= 4}
