"""Every accepted code layout packs to the same words; everything else is a clear ValueError."""
from __future__ import annotations

import numpy as np
import pytest

from index import codes


@pytest.mark.parametrize("bits", [8, 16, 24, 48, 64, 72, 128, 1024])
def test_layouts_agree(bits: int) -> None:
    rng = np.random.default_rng(bits)
    bit_matrix = rng.integers(0, 2, size=(5, bits)).astype(np.uint8)
    packed = np.packbits(bit_matrix, axis=1)
    expected = codes.pack(packed, bits)
    assert expected.dtype == np.uint64 and expected.shape == (5, codes.words_for(bits))
    signs = bit_matrix.astype(np.int8) * 2 - 1
    for variant in (bit_matrix, bit_matrix.astype(bool), signs,
                    signs.astype(np.float32), expected):
        assert np.array_equal(codes.pack(variant, bits), expected)
    assert np.array_equal(codes.unpack_bytes(expected, bits), packed)
    assert codes.to_hex(expected, bits)[0] == packed[0].tobytes().hex()
    assert np.array_equal(codes.from_hex(packed[1].tobytes().hex(), bits), expected[1:2])


def test_hamming_distance_is_bit_difference() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, size=(2, 96)).astype(np.uint8)
    words = codes.pack(np.stack([a, b]), 96)
    xor = np.bitwise_xor(words[0], words[1])
    assert int(np.bitwise_count(xor).sum()) == int((a != b).sum())


def test_single_code_may_be_one_dimensional() -> None:
    assert codes.pack(np.ones(16, dtype=np.int8), 16).shape == (1, 1)


@pytest.mark.parametrize("bad_bits", [0, 7, 12, 4104, -8, 8.0, True, "64"])
def test_bad_bit_lengths(bad_bits: object) -> None:
    with pytest.raises(ValueError, match="bits must be"):
        codes.check_bits(bad_bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 7), dtype=np.uint8), r"uint8 \[n, 8\]"),
    (np.zeros((2, 2), dtype=np.uint64), r"uint64 \[n, 1\]"),
    (np.zeros((2, 64), dtype=np.complex64), "complex64"),
    (np.zeros((2, 3, 8), dtype=np.uint8), r"shape \(2, 3, 8\)"),
    (np.full((1, 64), 2, dtype=np.int64), "only \\+-1 or only 0/1"),
    (np.array([[-1, 0] * 32]), "only \\+-1 or only 0/1"),
    (np.full((1, 64), np.nan), "NaN"),
])
def test_wrong_shapes_and_values_name_the_expected_layout(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codes.pack(array, 64)


def test_uint64_padding_must_be_zero() -> None:
    words = np.array([[1 << 63]], dtype=np.uint64)  # byte 7 of the word: beyond a 48-bit code
    with pytest.raises(ValueError, match="beyond bit 48"):
        codes.pack(words, 48)


def test_bad_hex() -> None:
    with pytest.raises(ValueError, match="not valid hex"):
        codes.from_hex("zz" * 8, 64)
    with pytest.raises(ValueError, match="16 hex digits"):
        codes.from_hex("ab", 64)
