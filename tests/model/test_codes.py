"""Codes are exactly sign(z) with 0 -> +1, packed MSB first."""
import numpy as np
import pytest
import torch

from model.codes import codes_from_logits, sign_codes
from model.hashnet import sign_straight_through, tanh_continuation


def test_sign_codes_are_exactly_plus_minus_one():
    z = torch.tensor([[-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0]])
    assert sign_codes(z).tolist() == [[-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]]


def test_packing_matches_sign_and_msb_first():
    z = torch.tensor([[1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 2.0]])
    codes = codes_from_logits(z)
    assert codes.dtype == np.uint8 and codes.shape == (1, 2)
    assert codes.tolist() == [[0b1000_0001, 0b0000_0001]]


def test_packed_bits_unpack_to_sign():
    z = torch.randn(32, 64)
    z[0, :5] = 0.0
    bits = np.unpackbits(codes_from_logits(z), axis=1)
    assert np.array_equal(bits * 2.0 - 1.0, sign_codes(z).numpy())


def test_numpy_and_torch_inputs_agree():
    z = torch.randn(4, 16)
    assert np.array_equal(codes_from_logits(z), codes_from_logits(z.numpy()))


def test_code_length_must_be_whole_bytes():
    with pytest.raises(ValueError):
        codes_from_logits(torch.randn(2, 12))


def test_sign_at_training_is_exactly_binary_and_still_has_a_gradient():
    z = torch.tensor([-0.3, 0.0, 0.2], requires_grad=True)
    codes = sign_straight_through(z, 1.0)
    assert codes.tolist() == [-1.0, 1.0, 1.0]
    codes.sum().backward()
    assert (z.grad > 0).all()


def test_tanh_continuation_approaches_sign():
    z = torch.tensor([-0.3, 0.2])
    assert torch.allclose(tanh_continuation(z, 1000.0), torch.tensor([-1.0, 1.0]))
