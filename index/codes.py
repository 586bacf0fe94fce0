"""Binary codes at the index boundary: validation and packing into uint64 words.

The index stores a K-bit code as ceil(K/64) little-endian uint64 words whose
bytes are the code's packed bytes (np.packbits order, most significant bit
first) followed by zero padding.  Hamming distance does not care about bit
order, so the only rule that matters is that database and query codes are
packed the same way, which every entry point here guarantees.
"""
from __future__ import annotations

import numpy as np

MIN_BITS = 8
MAX_BITS = 4096


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an integer, got {bits!r}")
    bits = int(bits)
    if bits % 8 or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be a multiple of 8 between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return bits


def words_for(bits: int) -> int:
    return (check_bits(bits) + 63) // 64


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Any accepted code layout -> C-contiguous uint64 [n, words_for(bits)].

    Accepted, with n codes (a single code may be 1-D):
      * uint8 [n, bits/8]: packed bytes, np.packbits order;
      * uint64 [n, ceil(bits/64)]: packed words as this module makes them;
      * [n, bits] of +-1 or {0, 1} (bool, any integer or float dtype):
        one entry per bit, bit set where the entry is 1.
    Anything else is a ValueError that names the expected shapes.
    """
    bits = check_bits(bits)
    n_bytes, n_words = bits // 8, words_for(bits)
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(_shape_error(arr, bits))
    width = arr.shape[1]
    if arr.dtype == np.uint8 and width == n_bytes and width != bits:
        return _words_from_bytes(arr, bits)
    if arr.dtype == np.uint64 and width == n_words:
        words = np.ascontiguousarray(arr)
        _check_padding(words, bits)
        return words
    if width == bits and (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
                          or np.issubdtype(arr.dtype, np.floating)):
        return _words_from_bytes(np.packbits(_bits_from_signs(arr), axis=1), bits)
    raise ValueError(_shape_error(arr, bits))


def unpack_bytes(words: np.ndarray, bits: int) -> np.ndarray:
    """uint64 words -> packed uint8 bytes [n, bits/8] (np.packbits order)."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    as_bytes = words.astype("<u8", copy=False).view(np.uint8).reshape(len(words), -1)
    return as_bytes[:, : bits // 8].copy()


def to_hex(words: np.ndarray, bits: int) -> list[str]:
    return [row.tobytes().hex() for row in unpack_bytes(words, bits)]


def from_hex(text: str, bits: int) -> np.ndarray:
    """One hex code (bits/4 hex digits) -> uint64 [1, words]."""
    bits = check_bits(bits)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"code is not valid hex: {text[:40]!r}") from None
    if len(raw) != bits // 8:
        raise ValueError(f"a {bits}-bit code is {bits // 4} hex digits, got {len(raw) * 2}")
    return _words_from_bytes(np.frombuffer(raw, dtype=np.uint8)[None, :], bits)


def _words_from_bytes(packed: np.ndarray, bits: int) -> np.ndarray:
    n, n_words = packed.shape[0], words_for(bits)
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, : bits // 8] = packed
    return padded.view("<u8").astype(np.uint64, copy=False).reshape(n, n_words)


def _bits_from_signs(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError("codes contain NaN or infinity")
    values = np.unique(arr)
    if np.isin(values, (0, 1)).all():
        return arr == 1
    if np.isin(values, (-1, 1)).all():
        return arr > 0
    raise ValueError(f"unpacked codes must hold only +-1 or only 0/1, found values {values[:5].tolist()}")


def _check_padding(words: np.ndarray, bits: int) -> None:
    if bits % 64 == 0:
        return
    tail = words.astype("<u8", copy=False).view(np.uint8).reshape(len(words), -1)[:, bits // 8:]
    if tail.any():
        raise ValueError(f"uint64 codes have bits set beyond bit {bits}: padding must be zero")


def _shape_error(arr: np.ndarray, bits: int) -> str:
    return (f"expected {bits}-bit codes as uint8 [n, {bits // 8}] packed bytes, uint64 [n, {words_for(bits)}] "
            f"words, or [n, {bits}] of +-1 / 0-1 values; got {arr.dtype} array of shape {arr.shape}")
