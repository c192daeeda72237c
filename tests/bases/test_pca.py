import numpy as np
import pytest
from sklearn.decomposition import PCA

from helpers.bases.curves import counts
from helpers.bases import NotFittedError, StreamingMoments, fit_bases
from helpers.bases.pca import NeuronBasis, PCABasis


def _data(n=3000, d=40, dtype=np.float64, seed=0):
    """Correlated data with a well-separated spectrum and an offset mean."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.1, d)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * scales @ Q.T + 50).astype(dtype)


def _sign_fixed(components):
    rows = np.arange(len(components))
    return components * np.sign(components[rows, np.abs(components).argmax(1)])[:, None]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pca_matches_sklearn(dtype):
    X = _data(dtype=dtype)
    ours = PCABasis().fit(X, chunk_size=512)
    ref = PCA(svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6)
    # float32 input: rounding of the float32 Gram product, relative to the total variance
    tol = 1e-12 if dtype == np.float64 else 1e-6
    total = ref.explained_variance_.sum()
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, atol=tol * total)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-6)
    # components equal up to sign
    np.testing.assert_allclose(np.abs(np.sum(ours.components_ * ref.components_, axis=1)), 1,
                               atol=1e-9 if dtype == np.float64 else 1e-4)
    np.testing.assert_allclose(ours.components_, _sign_fixed(ref.components_),
                               atol=1e-7 if dtype == np.float64 else 1e-2)


def test_pca_signs_are_deterministic():
    comps = PCABasis().fit(_data()).components_
    rows = np.arange(len(comps))
    assert (comps[rows, np.abs(comps).argmax(1)] > 0).all()
    np.testing.assert_array_equal(comps, PCABasis().fit(_data()).components_)


def test_streaming_equals_one_shot():
    X = _data()
    one = PCABasis().fit(X, chunk_size=len(X))
    chunked = PCABasis()
    for part in np.array_split(X, 7):
        chunked.partial_fit(part)
    np.testing.assert_allclose(chunked.explained_variance_, one.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(chunked.components_, one.components_, atol=1e-9)
    assert chunked.n_samples_seen_ == len(X)


def test_moments_match_numpy():
    X = _data(n=500, d=6)
    m = StreamingMoments()
    for part in np.array_split(X, 3):
        m.partial_fit(part)
    np.testing.assert_allclose(m.mean_, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance_, np.cov(X, rowvar=False), rtol=1e-9)


def test_transform_matches_sklearn_and_inverts():
    X = _data()
    ours = PCABasis().fit(X)
    ref = PCA(svd_solver="full").fit(X)
    signs = np.sign(np.sum(ours.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(ours.transform(X[:50]), ref.transform(X[:50]) * signs, atol=1e-8)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X[:50])), X[:50], atol=1e-8)


def test_n_components_truncates_but_ratios_stay_of_total_variance():
    X = _data()
    full, top = PCABasis().fit(X), PCABasis(n_components=5).fit(X)
    assert top.components_.shape == (5, X.shape[1])
    np.testing.assert_allclose(top.explained_variance_ratio_, full.explained_variance_ratio_[:5])


def test_neuron_basis_orders_neurons_by_variance():
    X = _data(d=12)
    basis = NeuronBasis().fit(X)
    var = X.var(axis=0, ddof=1)
    np.testing.assert_array_equal(basis.order_, np.argsort(-var, kind="stable"))
    np.testing.assert_allclose(basis.explained_variance_, np.sort(var)[::-1])
    np.testing.assert_allclose(basis.explained_variance_ratio_.sum(), 1)
    np.testing.assert_allclose(basis.transform(X)[:, 0], X[:, basis.order_[0]] - X[:, basis.order_[0]].mean())


def test_fit_bases_one_pass_equals_separate_fits():
    X = _data(d=10) - 50.5
    bases = fit_bases(X, post_relu=True, chunk_size=333)
    np.testing.assert_allclose(bases["pca_post_relu"].explained_variance_,
                               PCABasis().fit(np.maximum(X, 0)).explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(bases["neuron_pre_relu"].explained_variance_,
                               NeuronBasis().fit(X).explained_variance_, rtol=1e-9)
    assert "pca_post_relu" not in fit_bases(X, post_relu=False)


def test_save_and_load_roundtrip(tmp_path):
    X = _data(d=8)
    for cls in (PCABasis, NeuronBasis):
        b = cls().fit(X)
        b.save(tmp_path / "b.npz")
        c = cls.load(tmp_path / "b.npz")
        np.testing.assert_array_equal(c.components_, b.components_)
        np.testing.assert_allclose(c.partial_fit(X[:10]).n_samples_seen_, len(X) + 10)
    with pytest.raises(ValueError, match="holds a NeuronBasis"):
        PCABasis.load(tmp_path / "b.npz")


def test_counts_against_brute_force():
    rng = np.random.default_rng(1)
    ratio = np.sort(rng.random(50))[::-1]
    ratio /= ratio.sum()
    cum = np.cumsum(ratio)
    for t in (0.5, 0.8, 0.99):
        assert counts(ratio, (t,))[0] == next(k + 1 for k in range(50) if cum[k] >= t)
    assert counts(np.array([0.8, 0.2]), (0.8, 0.99)) == [1, 2]


def test_errors_name_the_problem():
    with pytest.raises(NotFittedError, match="call fit or partial_fit"):
        PCABasis().transform(np.zeros((2, 3)))
    basis = PCABasis().fit(_data(d=5))
    with pytest.raises(ValueError, match="has 4 features, but this estimator was fitted on 5"):
        basis.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="must be 2-D"):
        PCABasis().fit(np.zeros(5))
    with pytest.raises(ValueError, match="n_components=9 must be between 1 and n_features=5"):
        PCABasis(n_components=9).fit(_data(d=5)).components_


def test_a_truncated_basis_file_is_corrupt_with_the_fix(tmp_path):
    """Before: a truncated bases/*.npz surfaced as a bare BadZipFile."""
    from helpers import bases
    from helpers.pipeline import keys, store

    X = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    key = keys.key({"layers": ["fc3"]}, {}, ())
    with store.Build(tmp_path / "sample", key, "01") as b:
        np.save(b.partial / "fc3.npy", X)
        np.save(b.partial / "fc3_loc.npy", np.zeros((50, 3), np.int32))
        b.commit(["fc3.npy", "fc3_loc.npy"],
                 extra={"shapes": {"fc3": [4]}, "sites": {"fc3": {"path": "fc3", "kind": "vector", "relu": False}}})
    bases.fit_layer_bases(tmp_path / "sample", tmp_path / "bases", ["fc3"], {})
    path = tmp_path / "bases" / "fc3_pca_pre_relu.npz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(store.CorruptArtifactError, match=r"fc3_pca_pre_relu.npz is corrupt .*; delete .*bases "
                                                         r"and rerun 02_pca"):
        bases.load_basis(tmp_path / "bases", "fc3")
    with pytest.raises(store.CorruptArtifactError, match=r"not a saved basis \(BadZipFile.*rerun 02_pca"):
        PCABasis.load(path)  # even without the sidecar's check


def test_a_constant_layer_is_refused_with_the_fix(tmp_path):
    from helpers import bases as B
    from helpers.pipeline import keys, store

    key = keys.key({"layers": ["head"]}, {}, ())
    with store.Build(tmp_path / "sample", key, "test") as b:
        np.save(b.partial / "head.npy", np.zeros((6, 4), np.float32))
        np.save(b.partial / "head_loc.npy", np.zeros((6, 3), np.int32))
        b.commit(["head.npy", "head_loc.npy"], extra={"shapes": {"head": [4]},
                                                      "sites": {"head": {"path": "head", "kind": "vector",
                                                                         "relu": True}}})
    with pytest.raises(ValueError, match=r"layer 'head' is constant over the sample \(6 vectors, variance 0\).*"
                                         r"Leave it out of layers"):
        B.fit_layer_bases(tmp_path / "sample", tmp_path / "bases", ["head"], {})


# -- Fig. 5 for any basis: the variance explained by the top k vectors ----------------------------------------

def _brute_curve(basis, X):
    """R²(k) by reconstructing the data from the top k codes, one k at a time (the definition, no algebra)."""
    c = X - basis.mean_
    z = basis.transform(X) - basis.code_mean_
    total = (c ** 2).sum()
    return np.array([1 - ((c - z[:, :k] @ basis.components_[:k]) ** 2).sum() / total
                     for k in range(1, len(basis.components_) + 1)])


def test_the_pca_curve_is_the_cumulative_explained_variance_ratio():
    from helpers.bases.curves import explained_curve

    X = _data(d=30).astype(np.float32)
    pca, neuron = PCABasis().fit(X), NeuronBasis().fit(X)
    np.testing.assert_allclose(explained_curve(pca, X, chunk_size=700), np.cumsum(pca.explained_variance_ratio_),
                               atol=1e-6)
    shares = np.sort(X.astype(np.float64).var(axis=0))[::-1] / X.astype(np.float64).var(axis=0).sum()
    np.testing.assert_allclose(explained_curve(neuron, X, chunk_size=700), np.cumsum(shares), atol=1e-6)



def test_the_saved_curves_of_pca_and_the_neurons_are_the_curves_by_definition(tmp_path):
    """02 writes them in closed form from the moments; here they are rebuilt from the data, k by k."""
    from helpers import bases
    from helpers.pipeline import keys, store

    X = (_data(n=600, d=12) - 0.3).astype(np.float32)
    with store.Build(tmp_path / "sample", keys.key({"layers": ["fc"]}, {}, ()), "01") as b:
        np.save(b.partial / "fc.npy", X)
        np.save(b.partial / "fc_loc.npy", np.zeros((len(X), 3), np.int32))
        b.commit(["fc.npy", "fc_loc.npy"],
                 extra={"shapes": {"fc": [12]}, "sites": {"fc": {"path": "fc", "kind": "vector", "relu": True}}})
    bases.fit_layer_bases(tmp_path / "sample", tmp_path / "bases", ["fc"], {}, chunk_size=250)
    curves = np.load(tmp_path / "bases" / "fc_curves.npz")
    X64 = X.astype(np.float64)
    for curve, data in (("pca_pre_relu", X64), ("neuron_pre_relu", X64), ("pca_post_relu", np.maximum(X64, 0))):
        basis = bases.load_basis(tmp_path / "bases", "fc", curve)
        np.testing.assert_allclose(curves[curve], _brute_curve(basis, data), rtol=0, atol=1e-6, err_msg=curve)

class _Skewed:
    """A non-orthogonal basis with a linear encoder and non-zero code means (like ICA, shifted)."""

    def __init__(self, X, K, seed=0):
        rng = np.random.default_rng(seed)
        W = rng.standard_normal((K, X.shape[1]))
        self.components_ = W / np.linalg.norm(W, axis=1, keepdims=True)
        self.mean_ = X.mean(0)
        self.encoder_ = np.linalg.pinv(self.components_).T
        self.code_mean_ = (X @ self.encoder_.T).mean(0)

    def transform(self, X):
        return np.asarray(X, np.float64) @ self.encoder_.T


def test_the_curve_of_a_non_orthogonal_basis_equals_reconstructing_from_the_top_k():
    from helpers.bases.curves import explained_curve

    X = _data(n=1500, d=12)
    basis = _Skewed(X, K=8)
    np.testing.assert_allclose(explained_curve(basis, X, chunk_size=400), _brute_curve(basis, X), atol=1e-9)
    relu = np.maximum(X - 50, 0)  # the relu flag: the basis reconstructs relu(X)
    basis = _Skewed(relu, K=6, seed=1)
    np.testing.assert_allclose(explained_curve(basis, X - 50, relu=True), _brute_curve(basis, relu), atol=1e-9)


def test_curve_counts_say_where_a_curve_never_reaches_a_level():
    from helpers.bases.curves import curve_counts

    assert curve_counts([0.5, 0.85, 0.995]) == [2, 3]
    assert curve_counts([0.5, 0.7]) == [None, None]
    assert curve_counts([0.3, 0.9, 1.0]) == [2, 3]
