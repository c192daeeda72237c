import numpy as np
import pytest
import torch

from helpers import search
from helpers.models.standins import MiniAlexNet
from helpers.pipeline import store
from tests.conftest import RandomImages


def test_flat_index_equals_brute_force_numpy():
    rng = np.random.default_rng(0)
    X, Q = rng.standard_normal((5000, 32)), rng.standard_normal((100, 32))
    index = search.new_index(32)
    index.add(search.as_float32(X))
    D, ids = search.search(index, Q, 5)
    dist = ((Q[:, None, :] - X[None]) ** 2).sum(-1)
    expect = np.argsort(dist, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expect)
    np.testing.assert_allclose(D, np.take_along_axis(dist, expect, 1), rtol=1e-4)


def test_ivf_index_finds_most_true_neighbours():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 16)) * 5
    X = (centres[rng.integers(0, 50, 20000)] + rng.standard_normal((20000, 16))).astype(np.float32)
    flat, ivf = search.new_index(16), search.new_index(16, "ivf", nlist=64, train=X, seed=0)
    flat.add(X)
    ivf.add(X)
    ivf.nprobe = 8
    Q = X[:200] + 0.1
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(search.search(flat, Q, 5)[1],
                                                              search.search(ivf, Q, 5)[1])])
    assert recall >= 0.9


def test_bad_queries_and_kinds_are_clear_errors():
    index = search.new_index(8)
    with pytest.raises(ValueError, match="queries has 7 dimensions but the index has 8"):
        search.search(index, np.zeros((2, 7)), 1)
    with pytest.raises(ValueError, match="kind='hnsw' is unknown"):
        search.new_index(8, "hnsw")
    with pytest.raises(ValueError, match="needs at least 64 training vectors"):
        search.new_index(8, "ivf", nlist=64, train=np.zeros((10, 8)))


def test_index_holds_every_position_centred_with_its_location(tmp_path):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=6, shape=(1, 28, 28))
    means = {"conv2": np.full(48, 0.5, np.float32), "fc1": np.zeros(256, np.float32)}
    meta = search.index_activations(model, data, ["conv2", "fc1"], means, tmp_path / "ix", batch_size=4)
    assert meta["vectors"] == {"conv2": 6 * 14 * 14, "fc1": 6}
    index, loc = search.load_index(tmp_path / "ix", "conv2", device="cpu")
    loc = np.asarray(loc)
    with torch.no_grad():
        out = model.features[:4](data.x).numpy()  # conv2 pre-ReLU
    for row in (0, 200, 1175):
        image, y, x = loc[row]
        np.testing.assert_allclose(index.reconstruct(int(row)), out[image, :, y, x] - 0.5, atol=1e-5)
    assert len({tuple(r) for r in loc}) == len(loc)


def test_capped_index_is_a_seeded_subsample(tmp_path):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=6, shape=(1, 28, 28))
    means = {"conv1": np.zeros(24, np.float32)}
    kw = dict(cap=500, batch_size=4, seed=0)
    search.index_activations(model, data, ["conv1"], means, tmp_path / "a", **kw)
    search.index_activations(model, data, ["conv1"], means, tmp_path / "b", **{**kw, "batch_size": 5})
    a, b = (np.asarray(search.load_index(tmp_path / f, "conv1")[1]) for f in "ab")
    assert len(a) == 500
    np.testing.assert_array_equal(a, b)


def test_corrupt_index_says_how_to_fix(tmp_path):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=2, shape=(1, 28, 28))
    search.index_activations(model, data, ["fc3"], {"fc3": np.zeros(10)}, tmp_path / "ix")
    with pytest.raises(ValueError, match="layer='fc1' is not indexed"):
        search.load_index(tmp_path / "ix", "fc1")
    (tmp_path / "ix" / "fc3.faiss").write_bytes(b"broken")
    with pytest.raises(store.CorruptArtifactError, match="fc3.faiss is corrupt.*delete .*ix and rerun 03_index"):
        search.load_index(tmp_path / "ix", "fc3")
