import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning

from helpers.bases import NotFittedError
from helpers.bases.ica import ICABasis
from helpers.bases.nmf import NMFBasis
from helpers.bases.pca import PCABasis
from helpers.pipeline import store


def _mixed(n=20000, d=12, seed=0):
    """Four independent non-Gaussian sources (unit variance) mixed into d dims, tiny noise, an offset."""
    rng = np.random.default_rng(seed)
    S = np.stack([rng.laplace(size=n) / np.sqrt(2), rng.uniform(-np.sqrt(3), np.sqrt(3), n),
                  rng.exponential(size=n) - 1, rng.choice([-1.0, 1.0], n)], axis=1)
    A = rng.normal(size=(d, 4))
    return S, A, S @ A.T + 0.01 * rng.normal(size=(n, d)) + 5


def _planted_nmf(n=5000, d=30, k=5, seed=0):
    """Pre-ReLU X whose relu is exactly W @ H, with W, H sparse non-negative: negatives where W @ H is 0."""
    rng = np.random.default_rng(seed)
    W = rng.exponential(size=(n, k)) * (rng.random((n, k)) < 0.5)
    H = rng.exponential(size=(k, d)) * (rng.random((k, d)) < 0.4)
    H[np.arange(k), np.arange(k)] = 2.0  # every component shows (separable columns)
    post = W @ H
    return post, np.where(post > 0, post, -rng.exponential(size=post.shape))


@pytest.fixture(scope="module")
def ica():
    S, A, X = _mixed()
    return S, A, X, ICABasis(4).fit(X, chunk_size=4096)


@pytest.fixture(scope="module")
def nmf():
    post, X = _planted_nmf()
    return post, X, NMFBasis(5, epochs=200, batch_size=1024).fit(X)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_ica_recovers_planted_sources(ica):
    S, A, X, basis = ica
    corr = np.abs(np.corrcoef(S.T, basis.transform(X).T)[:4, 4:])
    assert ((corr >= 0.95).sum(axis=1) == 1).all() and ((corr >= 0.95).sum(axis=0) == 1).all(), corr.round(3)
    cos = np.abs((A / np.linalg.norm(A, axis=0)).T @ basis.components_.T)
    assert (cos.max(axis=1) >= 0.95).all(), cos.round(3)
    assert len(set(cos.argmax(axis=1))) == 4


def test_ica_is_the_pca_subspace_rotated(ica):
    _, _, X, basis = ica
    pca = PCABasis().fit(X)
    np.testing.assert_allclose(np.linalg.norm(basis.components_, axis=1), 1, atol=1e-12)
    assert (np.diff(basis.explained_variance_) <= 0).all()
    assert basis.explained_variance_ratio_.sum() == pytest.approx(pca.explained_variance_ratio_[:4].sum(), abs=1e-6)
    Z = basis.transform(X)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), basis.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_array_equal(basis.code_mean_, 0)
    np.testing.assert_array_equal(basis.baseline_, basis.code_mean_)
    np.testing.assert_array_equal(basis.offset_, basis.mean_)
    V = pca.components_[:4]
    top4 = pca.mean_ + (X - pca.mean_) @ V.T @ V
    np.testing.assert_allclose(basis.inverse_transform(Z), top4, atol=1e-6)
    # linear (affine) encoder
    np.testing.assert_allclose(Z, (X - basis.mean_) @ basis.encoder_.T, atol=1e-9)
    np.testing.assert_allclose(basis.transform(0.3 * X[:5] + 0.7 * X[5:10]), 0.3 * Z[:5] + 0.7 * Z[5:10], atol=1e-9)
    np.testing.assert_allclose(basis.transform(basis.mean_[None]), 0, atol=1e-9)
    np.testing.assert_allclose(basis.encode(torch.from_numpy(X[:50])).numpy(), Z[:50], atol=1e-9)
    assert basis.relu_input_ is False and basis.n_features_in_ == 12 and basis.n_samples_seen_ == len(X)
    # signs: positive skewness (the exponential source), else (symmetric sources) a positive largest loading
    Zc = Z - Z.mean(0)
    skew = (Zc ** 3).mean(0) / (Zc ** 2).mean(0) ** 1.5
    skewed = np.abs(skew) > 3 * np.sqrt(6 / len(X))
    loading = basis.components_[np.arange(4), np.abs(basis.components_).argmax(1)]
    assert skewed.sum() == 1 and (skew[skewed] > 0).all() and (loading[~skewed] > 0).all(), (skew, loading)


def test_ica_given_pca_and_deterministic(ica):
    _, _, X, basis = ica
    again = ICABasis(4).fit(X, pca=PCABasis().fit(X))  # other chunks than the fixture's: rounding differs
    np.testing.assert_allclose(again.components_, basis.components_, atol=1e-12)
    np.testing.assert_allclose(again.encoder_, basis.encoder_, atol=1e-12)
    with pytest.raises(ValueError, match="pass the PCABasis of this X"):
        ICABasis(4).fit(X, pca=PCABasis().fit(X[:100]))
    with pytest.warns(ConvergenceWarning):  # 8 of the 12 PCs are Gaussian noise: FastICA cannot separate them
        assert len(ICABasis(64, max_rows=2000, max_iter=50).fit(X[:3000]).components_) == 12  # K <= the PCs


def test_nmf_reconstructs_a_planted_factorisation(nmf):
    post, X, basis = nmf
    # the bar means something: the best rank-4 approximation (any signs) misses by 10 times more, 0.20;
    # exact NMF solvers (coordinate descent) reach 0, streamed multiplicative updates about 0.01
    s = np.linalg.svd(post, compute_uv=False)
    assert np.sqrt((s[4:] ** 2).sum() / (s ** 2).sum()) > 0.15
    Z = basis.transform(X)
    assert (Z >= 0).all()
    assert _rel(basis.inverse_transform(Z), post) < 2e-2
    # the codes are the non-negative least squares codes (scipy's exact active-set solver)
    for row in post[:20]:
        exact = nnls(basis.components_.T, row)[1]
        ours = np.linalg.norm(basis.inverse_transform(basis.transform(row[None]))[0] - row)
        assert ours <= exact + 1e-4 * np.linalg.norm(row)


def test_nmf_attributes_and_torch_encode(nmf):
    post, X, basis = nmf
    assert basis.relu_input_ is True and basis.components_.shape == (5, 30)
    assert (basis.components_ >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(basis.components_, axis=1), 1, atol=1e-12)
    assert (np.diff(basis.explained_variance_) <= 0).all()
    Z = basis.transform(X)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), basis.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(Z.mean(axis=0), basis.code_mean_, rtol=1e-9)
    np.testing.assert_allclose(basis.explained_variance_ratio_,
                               basis.explained_variance_ / post.var(axis=0, ddof=1).sum(), rtol=1e-9)
    np.testing.assert_allclose(basis.mean_, post.mean(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(basis.offset_, 0)
    np.testing.assert_array_equal(basis.baseline_, basis.code_mean_)
    rows = torch.from_numpy(X[:500])
    np.testing.assert_allclose(basis.encode(rows).numpy(), Z[:500], rtol=1e-5, atol=1e-5 * np.abs(Z).max())
    z32 = basis.encode(rows.float())
    assert z32.dtype == torch.float32
    np.testing.assert_allclose(z32.numpy(), Z[:500], atol=1e-3 * np.abs(Z).max())


@pytest.mark.parametrize("cls", [ICABasis, NMFBasis])
def test_same_seed_save_load_and_memmap(cls, tmp_path):
    X = (_mixed(4000)[2] if cls is ICABasis else _planted_nmf(2000)[1]).astype(np.float32)
    make = (lambda: ICABasis(4, max_rows=3000)) if cls is ICABasis else (lambda: NMFBasis(5, epochs=5))
    basis = make().fit(X)
    np.testing.assert_array_equal(make().fit(X).components_, basis.components_)
    np.save(tmp_path / "X.npy", X)
    mapped = make().fit(np.load(tmp_path / "X.npy", mmap_mode="r"))
    np.testing.assert_array_equal(mapped.components_, basis.components_)
    np.testing.assert_array_equal(mapped.explained_variance_, basis.explained_variance_)

    basis.save(tmp_path / "b.npz")
    loaded = cls.load(tmp_path / "b.npz")
    assert vars(loaded).keys() >= {"n_components", "seed"} and loaded.seed == basis.seed
    for name in cls._LEARNED + ("baseline_", "n_features_in_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(basis, name), err_msg=name)
    np.testing.assert_array_equal(loaded.transform(X[:100]), basis.transform(X[:100]))

    other = NMFBasis if cls is ICABasis else ICABasis
    with pytest.raises(ValueError, match=f"holds a {cls.__name__}, not a {other.__name__}"):
        other.load(tmp_path / "b.npz")
    path = tmp_path / "b.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(store.CorruptArtifactError, match=r"b.npz is corrupt or not a saved basis .*; delete .* "
                                                         r"and rerun 02_pca \(python -m helpers.run --only 02\)"):
        cls.load(path)


def test_bad_input_is_refused_with_the_fix():
    X = -np.abs(_planted_nmf(300)[1])
    with pytest.raises(ValueError, match="NMF needs post-ReLU activations with positive values"):
        NMFBasis(3, epochs=1).fit(X)
    for cls in (ICABasis, NMFBasis):
        with pytest.raises(NotFittedError, match="call fit"):
            cls().components_
        with pytest.raises(ValueError, match="n_components=0 must be an integer >= 1"):
            cls(0).fit(np.abs(X))
        with pytest.raises(ValueError, match="must be 2-D"):
            cls(2).fit(np.ones(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encode_on_the_gpu(ica, nmf):
    for X, basis in ((ica[2], ica[3]), (nmf[1], nmf[2])):
        codes = basis.encode(torch.from_numpy(X[:500]).cuda())
        assert codes.device.type == "cuda" and codes.dtype == torch.float64
        np.testing.assert_allclose(codes.cpu().numpy(), basis.transform(X[:500]), rtol=1e-5,
                                   atol=1e-5 * np.abs(basis.transform(X[:500])).max())
