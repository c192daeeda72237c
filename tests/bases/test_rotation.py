"""The random orthonormal basis (the baseline of every yardstick)."""
import numpy as np
import pytest

from helpers.bases import KINDS, RandomBasis, fit_layer_bases, load_basis
from helpers.bases.curves import explained_curve
from helpers.bases.rotation import haar_rotation
from helpers.pipeline import keys, store


def _data(n=2000, d=12, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return rng.normal(size=(n, d)) * np.geomspace(5, 0.2, d) @ Q.T + 3


def test_orthonormal_ordered_by_variance_and_signed():
    X = _data()
    b = RandomBasis(seed=3).fit(X, chunk_size=300)
    W = b.components_
    np.testing.assert_allclose(W @ W.T, np.eye(len(W)), atol=1e-12)
    # oracle: the variance along each vector, from numpy's covariance
    var = np.var(X @ W.T, axis=0, ddof=1)
    np.testing.assert_allclose(b.explained_variance_, var, rtol=1e-9)
    assert (np.diff(b.explained_variance_) <= 1e-12).all()
    np.testing.assert_allclose(b.explained_variance_ratio_.sum(), 1, rtol=1e-12)
    rows = np.arange(len(W))
    assert (W[rows, np.abs(W).argmax(1)] > 0).all()


def test_seeded_and_not_the_data_s_axes():
    X = _data()
    a, b, c = (RandomBasis(seed=s).fit(X).components_ for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.abs(a), np.abs(c))
    # not the PCs: a random basis needs more vectors for the same variance
    from helpers.bases import PCABasis
    pcs = PCABasis().fit(X)
    r = RandomBasis(seed=1).fit(X)
    assert np.cumsum(r.explained_variance_ratio_)[1] < np.cumsum(pcs.explained_variance_ratio_)[1]


def test_haar_rotation_is_uniform():
    """E[v vᵀ] = I/d for a row of a Haar rotation, and both orientations occur."""
    d = 3
    rows = np.stack([haar_rotation(d, s)[0] for s in range(3000)])
    np.testing.assert_allclose(rows.T @ rows / len(rows), np.eye(d) / d, atol=0.03)
    dets = [np.linalg.det(haar_rotation(d, s)) for s in range(50)]
    assert min(dets) < 0 < max(dets)


def test_curve_is_the_generic_reconstruction(tmp_path):
    """Fig. 5's curve of the random basis (closed form) equals explained_curve's pass over the sample."""
    X = _data()
    b = RandomBasis(seed=0).fit(X)
    np.testing.assert_allclose(np.cumsum(b.explained_variance_ratio_), explained_curve(b, X), atol=1e-10)


def test_fitted_saved_and_loaded_with_the_others(tmp_path):
    X = _data().astype(np.float32)
    sample = tmp_path / "sample"
    key = keys.key({"test": 1}, {}, ())
    with store.Build(sample, key, "test") as bld:
        np.save(bld.partial / "fc1.npy", X)
        np.save(bld.partial / "fc1_loc.npy", np.zeros((len(X), 3), np.int64))
        bld.commit(["fc1.npy", "fc1_loc.npy"], extra={"sites": {"fc1": {"relu": True}}, "shapes": {"fc1": [12]}})
    kinds = ("pca", "neuron", "random")
    fit_layer_bases(sample, tmp_path / "bases", ["fc1"], {}, chunk_size=500, kinds=kinds,
                    settings={"random": {"seed": 5}})
    loaded = load_basis(tmp_path / "bases", "fc1", "random")
    assert isinstance(loaded, RandomBasis) and KINDS["random"].curve == "random_pre_relu"
    np.testing.assert_allclose(loaded.components_, RandomBasis(seed=5).fit(X).components_, atol=1e-9)
    with np.load(tmp_path / "bases" / "fc1_curves.npz") as f:
        assert "random_pre_relu" in f.files
    # the baseline 06 makes when 02 did not fit it: the same basis, from the saved PCA's moments
    like = RandomBasis.like(load_basis(tmp_path / "bases", "fc1", "pca"), seed=5)
    np.testing.assert_array_equal(like.components_, loaded.components_)


def test_bases_setting_takes_random():
    from helpers.pipeline.settings import load_profile
    assert load_profile("smoke", bases="pca,random").bases == ("pca", "random")
    with pytest.raises(ValueError, match="random"):
        load_profile("smoke", bases="pca,rand")
