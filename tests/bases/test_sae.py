import numpy as np
import pytest
import torch

from helpers.bases import sae as sae_module
from helpers.bases import NotFittedError
from helpers.bases.pca import PCABasis
from helpers.bases.sae import SAEBasis
from helpers.pipeline.store import CorruptArtifactError

FAST = dict(batch_size=256, lr=3e-3, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is fastest, and idle threads spinning on a busy 2-core machine cost 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _planted(n=30000, d=48, m=32, active=3, seed=0):
    """Sums of ``active`` of ``m`` random unit directions with positive magnitudes, plus noise and an offset."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(m, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    which = rng.random((n, m)).argsort(axis=1)[:, :active]
    magnitudes = rng.exponential(1.0, size=(n, active)) + 0.2
    X = np.einsum("na,nad->nd", magnitudes, D[which])
    X += 0.01 * rng.normal(size=(n, d)) + 3 * rng.normal(size=d)
    return X.astype(np.float32), D


def _small(n=3000, d=16, seed=1):
    return _planted(n=n, d=d, m=12, active=2, seed=seed)[0]


@pytest.fixture(scope="module")
def planted():
    X, D = _planted()
    return X, D, SAEBasis(n_latents=64, k=3, epochs=6, **FAST).fit(X)


def test_recovers_planted_directions(planted):
    X, D, sae = planted
    best = (D @ sae.components_.T).max(axis=1)
    assert best.min() >= 0.95, np.sort(best)[:5]


def test_basis_is_ordered_and_codes_are_consistent(planted):
    X, _, sae = planted
    assert sae.components_.shape == (64, 48) and sae.n_components == 64 and sae.n_features_in_ == 48
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1, atol=1e-6)
    assert (np.diff(sae.explained_variance_) <= 0).all()
    live = len(sae.dead_) - sae.dead_.sum()
    assert not sae.dead_[:live].any() and (sae.explained_variance_[live:] == 0).all()  # dead ones last
    codes = sae.transform(X)
    assert ((codes != 0).sum(axis=1) <= 3).all() and (codes >= 0).all()
    np.testing.assert_allclose(sae.explained_variance_, codes.var(axis=0, ddof=1), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(sae.code_mean_, codes.mean(axis=0), rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(sae.dead_, (codes == 0).all(axis=0))
    total = np.trace(np.cov(X.astype(np.float64), rowvar=False))
    np.testing.assert_allclose(sae.explained_variance_ratio_, sae.explained_variance_ / total, rtol=1e-6)
    np.testing.assert_allclose(sae.mean_, X.mean(axis=0, dtype=np.float64), atol=1e-6)
    np.testing.assert_array_equal(sae.baseline_, np.zeros(64))
    recon = sae.inverse_transform(codes)
    np.testing.assert_allclose(recon, sae.offset_ + codes @ sae.components_, rtol=1e-12, atol=1e-12)
    fvu = np.sum((recon - X) ** 2) / np.sum((X - X.mean(axis=0)) ** 2)
    assert fvu < 0.05, fvu  # the codes are in the units of X: they reconstruct it


def test_encode_matches_transform(planted):
    X, _, sae = planted
    rows = X[:500]
    np.testing.assert_array_equal(sae.encode(torch.from_numpy(rows).double()).numpy(), sae.transform(rows))
    single = sae.encode(torch.from_numpy(rows))
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.numpy(), sae.transform(rows), atol=1e-5 * sae.scale_, rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        sae.encode(torch.zeros(3, 5))


def test_unfitted_attributes_raise():
    sae = SAEBasis(k=2)
    with pytest.raises(NotFittedError, match="fit"):
        sae.components_
    with pytest.raises(NotFittedError):
        sae.transform(np.zeros((2, 3)))


def test_same_seed_same_basis_and_other_seed_differs():
    X = _small()
    a, b, c = (SAEBasis(32, 3, epochs=2, seed=s, **FAST).fit(X) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.transform(X[:100]), b.transform(X[:100]))
    assert not np.array_equal(a.components_, c.components_)


def test_resumed_fit_equals_uninterrupted(tmp_path):
    X, ck = _small(), tmp_path / "sae.pt"
    whole = SAEBasis(32, 3, epochs=3, **FAST).fit(X)
    stopped = SAEBasis(32, 3, epochs=3, **FAST).fit(X, checkpoint=ck, _stop_after=1)
    with pytest.raises(NotFittedError):
        stopped.components_
    assert torch.load(ck, weights_only=True)["epoch"] == 1
    resumed = SAEBasis(32, 3, epochs=3, **FAST).fit(X, checkpoint=ck)
    assert torch.load(ck, weights_only=True)["epoch"] == 3
    for name in ("components_", "explained_variance_", "offset_", "encoder_weight_", "dead_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    again = SAEBasis(32, 3, epochs=3, **FAST).fit(X, checkpoint=ck)  # all epochs done: only the final pass
    np.testing.assert_array_equal(again.components_, whole.components_)


def test_checkpoint_of_other_settings_or_data_is_refused(tmp_path):
    X, ck = _small(), tmp_path / "sae.pt"
    SAEBasis(32, 3, epochs=1, **FAST).fit(X, checkpoint=ck)
    with pytest.raises(ValueError, match=r"other settings \(k: 3 there, 4 now\).*delete it"):
        SAEBasis(32, 4, epochs=1, **FAST).fit(X, checkpoint=ck)
    with pytest.raises(ValueError, match="other settings.*epochs"):
        SAEBasis(32, 3, epochs=2, **FAST).fit(X, checkpoint=ck)
    with pytest.raises(ValueError, match="other data.*delete it"):
        SAEBasis(32, 3, epochs=1, **FAST).fit(X + 1, checkpoint=ck)


def test_save_load_round_trip(tmp_path, planted):
    X, _, sae = planted
    path = tmp_path / "sae_basis"  # no .npz suffix: saved under this very name
    sae.save(path)
    loaded = SAEBasis.load(path)
    np.testing.assert_array_equal(loaded.transform(X[:300]), sae.transform(X[:300]))
    for name in ("components_", "explained_variance_ratio_", "code_mean_", "dead_", "mean_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(sae, name), err_msg=name)
    assert (loaded.k, loaded.n_components, loaded.n_samples_seen_) == (3, 64, len(X))
    assert loaded.lr == sae.lr and loaded.n_latents == 64 and loaded.aux_k is None


def test_load_refuses_truncated_file_and_other_kind(tmp_path, planted):
    path = tmp_path / "sae.npz"
    planted[2].save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CorruptArtifactError, match=r"sae\.npz is corrupt.*delete.*02_pca"):
        SAEBasis.load(path)
    other = tmp_path / "pca.npz"
    PCABasis().fit(_small()).save(other)
    with pytest.raises(ValueError, match="holds a PCABasis, not a SAEBasis"):
        SAEBasis.load(other)


class _Recording:
    """A memory map that records how many rows each read returns."""

    def __init__(self, X):
        self.X, self.reads = X, []
        self.shape, self.ndim = X.shape, X.ndim

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        rows = self.X[index]
        self.reads.append(len(rows))
        return rows


def test_fit_streams_a_memory_map(tmp_path, monkeypatch):
    monkeypatch.setattr(sae_module, "_CHUNK_VALUES", 16 * 1000)  # passes over X read 1000 rows at a time
    X = _small(n=5000)
    np.save(tmp_path / "X.npy", X)
    mapped = _Recording(np.load(tmp_path / "X.npy", mmap_mode="r"))
    on_disk = SAEBasis(32, 3, epochs=2, **FAST).fit(mapped)
    in_memory = SAEBasis(32, 3, epochs=2, **FAST).fit(X)
    np.testing.assert_array_equal(on_disk.components_, in_memory.components_)
    assert on_disk.n_samples_seen_ == 5000 and max(mapped.reads) < len(X)  # never all of X at once
    assert sum(r == FAST["batch_size"] for r in mapped.reads) >= 2 * (5000 // FAST["batch_size"])


def test_codes_are_in_the_units_of_x():
    X = _small()
    one, two = (SAEBasis(32, 3, epochs=2, **FAST).fit(c * X) for c in (1, 2))  # x2: exact in floating point
    np.testing.assert_array_equal(two.components_, one.components_)
    np.testing.assert_allclose(two.transform(2 * X[:200]), 2 * one.transform(X[:200]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(two.offset_, 2 * one.offset_, rtol=1e-12)
    np.testing.assert_allclose(two.explained_variance_, 4 * one.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(two.explained_variance_ratio_, one.explained_variance_ratio_, rtol=1e-9)
