"""A snapshot as named byte sections with sizes and CRC32s, the one layout every persistent store writes.

The stores differ only in where the bytes go (a file, Redis hash fields);
describing and checking them here means both refuse the same damage with
the same words, and both load by viewing raw little-endian bytes, not by
parsing.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from index.errors import CorruptStore
from index.stores.base import Snapshot

#: bump when the layout of stored bytes changes; stores refuse versions they do not know
FORMAT_VERSION = 1

_DTYPES = {"codes": "<u8", "id_lens": "<i4", "meta_lens": "<i4", "id_blob": "u1", "meta_blob": "u1"}
SECTIONS = tuple(_DTYPES)


def crc32(data: Any, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def sections(snapshot: Snapshot) -> dict[str, np.ndarray]:
    """Each array of the snapshot as flat little-endian bytes (views where possible)."""
    arrays = {"codes": snapshot.codes, "id_lens": snapshot.id_lens, "meta_lens": snapshot.meta_lens,
              "id_blob": snapshot.id_blob, "meta_blob": snapshot.meta_blob}
    return {name: np.ascontiguousarray(arrays[name], dtype=_DTYPES[name]).reshape(-1).view(np.uint8)
            for name in SECTIONS}


def describe(snapshot: Snapshot, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What a loader needs to rebuild and check the snapshot from `data` (the output of sections())."""
    return {"seq": int(snapshot.seq), "count": len(snapshot), "words": int(snapshot.codes.shape[1]),
            "sections": {name: {"size": len(data[name]), "crc32": crc32(data[name])} for name in SECTIONS}}


def section_sizes(header: Mapping[str, Any], where: str) -> dict[str, int]:
    """Declared size of each section, refusing a header that is not one describe() wrote."""
    try:
        sizes = {name: int(header["sections"][name]["size"]) for name in SECTIONS}
        count, words = int(header["count"]), int(header["words"])
        int(header["seq"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptStore(f"{where}: snapshot description is incomplete ({exc!r})") from None
    expected = {"codes": count * words * 8, "id_lens": count * 4, "meta_lens": count * 4}
    for name, size in expected.items():
        if sizes[name] != size:
            raise CorruptStore(f"{where}: snapshot section {name} is declared as {sizes[name]} bytes, "
                               f"but {count} items of {words} words need {size}")
    if min(sizes.values()) < 0:
        raise CorruptStore(f"{where}: snapshot declares a negative section size")
    return sizes


def assemble(header: Mapping[str, Any], data: Mapping[str, Any], where: str) -> Snapshot:
    """Rebuild a snapshot from its sections, checking sizes and checksums; `where` names the source in errors."""
    sizes = section_sizes(header, where)
    arrays = {}
    for name in SECTIONS:
        raw = data[name]
        if len(raw) != sizes[name]:
            raise CorruptStore(f"{where}: snapshot section {name} holds {len(raw)} bytes, expected {sizes[name]}")
        if crc32(raw) != header["sections"][name].get("crc32"):
            raise CorruptStore(f"{where}: snapshot section {name} fails its CRC32 check")
        arrays[name] = np.frombuffer(raw, dtype=_DTYPES[name])
    snapshot = Snapshot(int(header["seq"]), arrays["codes"].reshape(int(header["count"]), int(header["words"])),
                        arrays["id_blob"], arrays["id_lens"], arrays["meta_blob"], arrays["meta_lens"])
    try:
        snapshot.validate(int(header["words"]))
        if (snapshot.id_lens < 0).any() or (snapshot.meta_lens < 0).any():
            raise CorruptStore("snapshot holds negative lengths")
    except CorruptStore as exc:
        raise CorruptStore(f"{where}: {exc}") from None
    return snapshot
