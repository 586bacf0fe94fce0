"""Binary codes: the one definition of sign (0 -> +1) and of the packed layout."""
from __future__ import annotations

import numpy as np
import torch


def sign_codes(z: torch.Tensor) -> torch.Tensor:
    """Exactly +-1 codes in z's dtype; z == 0 maps to +1 so every bit is defined."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def codes_from_logits(z: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pack hash-layer outputs [B, K] into uint8 [B, K // 8].

    Bit i is 1 iff z_i >= 0; bytes follow np.packbits (most significant bit
    first), the layout the index stores.
    """
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    if z.ndim != 2 or z.shape[1] % 8:
        raise ValueError(f"expected logits of shape [B, K] with K a multiple of 8, got {z.shape}")
    return np.packbits(z >= 0, axis=1)
