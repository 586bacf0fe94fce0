"""Shallow hashing baselines fitted on the same backbone features HashNet starts from.

They answer "how much does learning the hash layer buy?": LSH is what random
projections give, sign(PCA) what the features' own variance gives, and ITQ
(Gong & Lazebnik, CVPR 2011) the best an unsupervised rotation of that PCA can
do.  Codes follow the HashNet encoder's convention so every method is searched
and scored the same way: bit = 1 where the projection is >= 0 (sign(0) = +1),
packed with np.packbits, most significant bit first.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class LinearHash(ABC):
    """Codes = sign((x - mean) @ projection).  Subclasses differ only in how fit chooses the projection."""

    def __init__(self, bits: int) -> None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 8 or bits % 8:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits!r}")
        self.bits = int(bits)
        self.mean: np.ndarray | None = None
        self.projection: np.ndarray | None = None

    @abstractmethod
    def fit(self, features: np.ndarray) -> LinearHash:
        """Learn mean and projection from training features; returns self."""

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Float features [n, F] -> packed codes uint8 [n, bits/8]."""
        if self.mean is None or self.projection is None:
            raise RuntimeError(f"{type(self).__name__} must be fitted before it can encode")
        features = _check_features(features, expected_dim=len(self.mean))
        return np.packbits((features - self.mean) @ self.projection >= 0, axis=1)

    def _centre(self, features: np.ndarray) -> np.ndarray:
        features = _check_features(features).astype(np.float64)
        self.mean = features.mean(axis=0)
        return features - self.mean


class LSH(LinearHash):
    """Random Gaussian hyperplanes through the data mean (sign random projections)."""

    def __init__(self, bits: int, seed: int = 0) -> None:
        super().__init__(bits)
        self.seed = seed

    def fit(self, features: np.ndarray) -> LSH:
        centred = self._centre(features)
        rng = np.random.default_rng(self.seed)
        self.projection = rng.standard_normal((centred.shape[1], self.bits))
        return self


class SignPCA(LinearHash):
    """Sign of the top `bits` principal components: ITQ without the rotation."""

    def fit(self, features: np.ndarray) -> SignPCA:
        self.projection = _principal_components(self._centre(features), self.bits)
        return self


class ITQ(LinearHash):
    """Iterative quantisation: PCA to `bits` dimensions, then the rotation R minimising ||B - V R||^2.

    Alternates B = sign(V R) with R from the orthogonal Procrustes problem;
    each step can only lower the loss, recorded per iteration (per item, for
    the current R with its best B) in ``quantization_loss``.
    """

    def __init__(self, bits: int, n_iter: int = 50, seed: int = 0) -> None:
        super().__init__(bits)
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        self.n_iter = n_iter
        self.seed = seed
        self.quantization_loss: list[float] = []

    def fit(self, features: np.ndarray) -> ITQ:
        centred = self._centre(features)
        pca = _principal_components(centred, self.bits)
        projected = centred @ pca
        # A random orthogonal start, as in the paper: PCA directions have very
        # unequal variance, and the rotation is what spreads it across bits.
        rng = np.random.default_rng(self.seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.quantization_loss = []
        for _ in range(self.n_iter):
            rotated = projected @ rotation
            codes = np.where(rotated >= 0, 1.0, -1.0)
            self.quantization_loss.append(float(np.sum((codes - rotated) ** 2) / len(projected)))
            left, _, right = np.linalg.svd(projected.T @ codes)
            rotation = left @ right
        self.projection = pca @ rotation
        return self


def _principal_components(centred: np.ndarray, count: int) -> np.ndarray:
    """The `count` leading principal directions, as columns [F, count]."""
    n, dims = centred.shape
    if count > min(n, dims):
        raise ValueError(f"cannot take {count} principal components of {n} samples of {dims}-dimensional features")
    if n < dims:
        # Fewer samples than dimensions: the thin SVD of the data is far
        # cheaper than the F x F eigenproblem and gives the same directions.
        _, _, rows = np.linalg.svd(centred, full_matrices=False)
        return rows[:count].T
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return vectors[:, ::-1][:, :count]


def _check_features(features: np.ndarray, expected_dim: int | None = None) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating) or len(features) == 0:
        raise ValueError(f"features must be a non-empty float array [n, F]; got {features.dtype} {features.shape}")
    if expected_dim is not None and features.shape[1] != expected_dim:
        raise ValueError(f"features have {features.shape[1]} dimensions, the hash was fitted on {expected_dim}")
    return features
