"""LSH, sign(PCA) and ITQ: code layout, determinism, ITQ's objective, and that structure-aware hashing wins."""
from __future__ import annotations

import numpy as np
import pytest

from model.baselines import ITQ, LSH, SignPCA
from model.metrics import mean_average_precision


def clustered_features(seed: int, classes=10, per_class=80, signal_dim=16, dim=128, noise=0.6):
    """Class clusters living in a 16-d subspace of a 128-d space, buried in isotropic noise.

    Random hyperplanes mostly cut the noise; PCA finds the subspace.  Returns
    (database features, database labels, query features, query labels).
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, signal_dim)))
    centres = rng.standard_normal((classes, signal_dim))
    labels = np.repeat(np.arange(classes), per_class)
    signal = centres[labels] + 0.4 * rng.standard_normal((len(labels), signal_dim))
    features = (signal @ basis.T + noise * rng.standard_normal((len(labels), dim))).astype(np.float32)
    multi_hot = np.eye(classes, dtype=np.int64)[labels]
    is_query = np.zeros(len(labels), bool)
    is_query[rng.choice(len(labels), len(labels) // 8, replace=False)] = True
    return features[~is_query], multi_hot[~is_query], features[is_query], multi_hot[is_query]


@pytest.mark.parametrize("method", [LSH(32, seed=1), SignPCA(32), ITQ(32, n_iter=10, seed=1)],
                         ids=["lsh", "pca", "itq"])
def test_codes_are_packed_signs_of_the_projection(method):
    db, _, queries, _ = clustered_features(0)
    codes = method.fit(db).encode(queries)
    assert codes.dtype == np.uint8 and codes.shape == (len(queries), 4)
    projected = (queries.astype(np.float64) - method.mean) @ method.projection
    bits = np.unpackbits(codes, axis=1)
    np.testing.assert_array_equal(bits, (projected >= 0).astype(np.uint8))
    # MSB first: the first projection decides the top bit of the first byte.
    np.testing.assert_array_equal(codes[:, 0] >> 7, (projected[:, 0] >= 0).astype(np.uint8))


def test_pca_with_fewer_samples_than_dimensions_finds_the_covariance_eigenvectors():
    """That case takes the thin SVD of the data; it must agree with the covariance's eigenvectors up to sign."""
    rng = np.random.default_rng(5)
    features = rng.standard_normal((12, 20)) * np.linspace(5, 0.5, 20)  # distinct variances: unique directions
    centred = features - features.mean(axis=0)
    eigenvectors = np.linalg.eigh(centred.T @ centred)[1][:, ::-1][:, :8]
    projection = SignPCA(8).fit(features).projection
    np.testing.assert_allclose(np.abs(projection.T @ eigenvectors), np.eye(8), atol=1e-6)


def test_a_zero_projection_is_bit_one():
    db, _, _, _ = clustered_features(0)
    lsh = LSH(16).fit(db)
    at_the_mean = lsh.mean[None, :].astype(np.float32)
    lsh.mean = at_the_mean[0].astype(np.float64)  # exactly zero after centring
    np.testing.assert_array_equal(lsh.encode(at_the_mean), np.full((1, 2), 0xFF, np.uint8))


def test_same_seed_same_codes_other_seed_other_codes():
    db, _, queries, _ = clustered_features(1)
    np.testing.assert_array_equal(ITQ(16, seed=3).fit(db).encode(queries), ITQ(16, seed=3).fit(db).encode(queries))
    np.testing.assert_array_equal(LSH(16, seed=3).fit(db).encode(queries), LSH(16, seed=3).fit(db).encode(queries))
    assert not np.array_equal(LSH(16, seed=3).fit(db).encode(queries), LSH(16, seed=4).fit(db).encode(queries))


def test_itq_quantisation_loss_never_rises_and_falls_overall():
    db, _, _, _ = clustered_features(2)
    itq = ITQ(32, n_iter=50, seed=0).fit(db)
    losses = np.array(itq.quantization_loss)
    assert len(losses) == 50
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    assert losses[-1] < 0.9 * losses[0]
    # PCA directions times an orthogonal rotation: the projection's columns stay orthonormal.
    np.testing.assert_allclose(itq.projection.T @ itq.projection, np.eye(32), atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_itq_beats_lsh_on_structured_data(seed):
    db, db_labels, queries, query_labels = clustered_features(seed)
    scores = {}
    for name, method in {"lsh": LSH(16, seed=seed), "itq": ITQ(16, seed=seed)}.items():
        method.fit(db)
        scores[name] = mean_average_precision(method.encode(queries), query_labels, method.encode(db), db_labels)
    assert scores["itq"] > scores["lsh"] + 0.08, scores
    assert scores["itq"] > 0.7, scores


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        LSH(12)
    with pytest.raises(RuntimeError, match="fitted"):
        ITQ(16).encode(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="principal components"):
        ITQ(64).fit(np.random.default_rng(0).standard_normal((100, 32)))
    with pytest.raises(ValueError, match="principal components"):
        SignPCA(64).fit(np.random.default_rng(0).standard_normal((40, 128)))
    with pytest.raises(ValueError, match="dimensions"):
        LSH(8).fit(np.ones((3, 4))).encode(np.ones((3, 5)))
