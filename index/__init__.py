"""Packed-bit Hamming index: exact top-k and radius search over binary codes, with ids and metadata.

Knows numpy and its compiled kernel; knows nothing of torch or HTTP.
"""
from index.codes import check_bits, from_hex, pack, to_hex, unpack_bytes, words_for
from index.errors import CorruptStore, FingerprintMismatch, LogGap, StoreError, StoreLocked
from index.hamming import Hit, HammingIndex, Item, RangeResult, SearchResult
from index.stores import Fingerprint, Store, open_store

__all__ = [
    "CorruptStore", "Fingerprint", "FingerprintMismatch", "HammingIndex", "Hit", "Item", "LogGap",
    "RangeResult", "SearchResult", "Store", "StoreError", "StoreLocked", "check_bits", "from_hex",
    "open_store", "pack", "to_hex", "unpack_bytes", "words_for",
]
