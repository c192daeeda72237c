import numpy as np
import pytest
import torch

from helpers.bases import StreamingMoments, fit_bases
from helpers.bases.pca import PCABasis

CHUNKS = (1, 37, 200, 500, 263)  # uneven, one of a single row


def _data(n=1001, d=24, dtype=np.float64, seed=0):
    """Correlated data with an offset mean (the shift matters)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * np.geomspace(10, 0.1, d) @ Q.T + 50).astype(dtype)


def _fed(m, X, chunks=CHUNKS):
    start = 0
    for size in chunks:
        m.partial_fit(X[start:start + size])
        start += size
    assert start == len(X)
    return m


def _close(a, b, rtol):
    scale = np.abs(b).max()
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_path_equals_numpy_path(dtype):
    X = _data(dtype=dtype)
    ours = _fed(StreamingMoments(device="cpu"), X)
    # the device path converts to float64 before the product: it is numpy's path on float64 data
    ref = _fed(StreamingMoments(), X.astype(np.float64))
    _close(ours.mean_, ref.mean_, 1e-10)
    _close(ours.covariance_, ref.covariance_, 1e-10)
    X64 = X.astype(np.float64)
    _close(ours.mean_, X64.mean(0), 1e-10)
    _close(ours.covariance_, np.cov(X64, rowvar=False), 1e-10)
    if dtype == np.float32:  # numpy's own float32 product rounds more, within float32's precision
        _close(ours.covariance_, _fed(StreamingMoments(), X).covariance_, 1e-5)
    for v in (ours.mean_, ours.covariance_, *ours.state().values()):
        assert not isinstance(v, np.ndarray) or v.dtype == np.float64
    assert ours.n_samples_seen_ == len(X) and ours.n_features_in_ == X.shape[1]


def test_torch_path_reads_a_read_only_memory_map_without_writing(tmp_path):
    X = _data(n=300, d=5)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    m = _fed(StreamingMoments(device="cpu"), mm, (100, 150, 50))
    _close(m.covariance_, np.cov(X, rowvar=False), 1e-10)
    np.testing.assert_array_equal(mm, X)
    given = torch.from_numpy(X.copy())  # a float64 tensor on the device is the caller's: left as it was
    StreamingMoments(device="cpu").partial_fit(given).partial_fit(given)
    np.testing.assert_array_equal(given.numpy(), X)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_state_round_trip_then_continued_fit(device):
    X = _data()
    whole = _fed(StreamingMoments(device=device), X)
    half = _fed(StreamingMoments(device=device), X[:500], (200, 300))
    state = half.state()
    assert set(state) == {"n", "shift", "s1", "s2"}
    assert all(isinstance(state[k], np.ndarray) and state[k].dtype == np.float64 for k in ("shift", "s1", "s2"))
    resumed = StreamingMoments.from_state(state, device=device)
    _fed(resumed, X[500:], (1, 499, 1))
    _close(resumed.mean_, whole.mean_, 1e-12)
    _close(resumed.covariance_, whole.covariance_, 1e-12)
    np.testing.assert_array_equal(StreamingMoments.from_state(state).covariance_, half.covariance_)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_dimension_mismatch_is_the_same_error(device):
    m = StreamingMoments(device=device).partial_fit(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="X has 5 features, but this estimator was fitted on 4; pass activations"):
        m.partial_fit(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"X must be 2-D of shape \(n_samples, n_features\); got shape \(4,\)"):
        m.partial_fit(np.zeros(4))
    assert m.partial_fit(np.zeros((0, 4))).n_samples_seen_ == 3


def test_fit_bases_keeps_numpy_on_the_cpu():
    X = _data(d=8) - 50.5
    for device in (None, "cpu"):
        got = fit_bases(X, post_relu=True, chunk_size=333, device=device)
        np.testing.assert_array_equal(got["pca_post_relu"].explained_variance_,
                                      fit_bases(X, post_relu=True, chunk_size=333)["pca_post_relu"].explained_variance_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: moments on the GPU")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_moments_on_the_gpu_equal_numpy(dtype):
    X = _data(n=20011, d=64, dtype=dtype)
    ours = _fed(StreamingMoments(device="cuda"), X, (4096,) * 4 + (20011 - 4 * 4096,))
    assert ours._s2.device.type == "cuda"
    X64 = X.astype(np.float64)
    _close(ours.mean_, X64.mean(0), 1e-10)
    _close(ours.covariance_, np.cov(X64, rowvar=False), 1e-10)
    Y = X - 50.5
    got = fit_bases(Y, post_relu=True, chunk_size=3000, device="cuda")
    ref = PCABasis().fit(np.maximum(Y.astype(np.float64), 0))
    _close(got["pca_post_relu"].explained_variance_, ref.explained_variance_, 1e-9)
