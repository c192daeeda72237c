import faiss
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
    meta = search.index_activations(model, data, ["conv2", "fc1"], means, tmp_path / "ix", {}, batch_size=4)
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
    search.index_activations(model, data, ["conv1"], means, tmp_path / "a", {}, **kw)
    search.index_activations(model, data, ["conv1"], means, tmp_path / "b", {}, **{**kw, "batch_size": 5})
    a, b = (np.asarray(search.load_index(tmp_path / f, "conv1")[1]) for f in "ab")
    assert len(a) == 500
    np.testing.assert_array_equal(a, b)


def test_a_capped_index_holds_the_chosen_positions_vectors_of_the_full_one(tmp_path):
    """The positions are gathered where the activations are; each kept vector is the full index's, bit for bit."""
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=7, shape=(1, 28, 28))
    means = {"conv2": np.full(48, 0.25, np.float32), "fc1": np.linspace(-1, 1, 256).astype(np.float32)}
    indices = np.array([0, 2, 3, 5, 6])
    full = search.index_activations(model, data, ["conv2", "fc1"], means, tmp_path / "full", {}, indices=indices,
                                    batch_size=2)
    capped = search.index_activations(model, data, ["conv2", "fc1"], means, tmp_path / "cap", {}, indices=indices,
                                      cap=101, batch_size=2, seed=3)
    assert capped["vectors"] == {"conv2": 101, "fc1": 5} and full["vectors"]["conv2"] == 5 * 14 * 14
    ids = search.choose_positions(5, 14 * 14, 101, 3)
    for layer in ("conv2", "fc1"):
        fi, fl = search.load_index(tmp_path / "full", layer, device="cpu")
        ci, cl = search.load_index(tmp_path / "cap", layer, device="cpu")
        rows = ids if layer == "conv2" else np.arange(5)  # ids: slot * 196 + position, the full index's rows
        np.testing.assert_array_equal(np.asarray(cl), np.asarray(fl)[rows])
        np.testing.assert_array_equal(ci.reconstruct_n(0, ci.ntotal), fi.reconstruct_n(0, fi.ntotal)[rows])


def test_corrupt_index_says_how_to_fix(tmp_path):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=2, shape=(1, 28, 28))
    search.index_activations(model, data, ["fc3"], {"fc3": np.zeros(10)}, tmp_path / "ix", {})
    with pytest.raises(ValueError, match="layer='fc1' is not indexed"):
        search.load_index(tmp_path / "ix", "fc1")
    (tmp_path / "ix" / "fc3.faiss").write_bytes(b"broken")
    with pytest.raises(store.CorruptArtifactError, match="fc3.faiss is corrupt.*delete .*ix and rerun 03_index"):
        search.load_index(tmp_path / "ix", "fc3")


def _flat(X):
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    return index


def _same_neighbours(D, ids, D_ref, ids_ref):
    """Equal up to the order of neighbours whose distances tie (within 1e-5 relative)."""
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-6)
    differ = ids != ids_ref
    assert np.all(np.abs(D[differ] - D_ref[differ]) <= 1e-5 * np.abs(D_ref[differ]) + 1e-6)


@pytest.mark.parametrize("block_size, query_block", [(3, 7), (97, 1000), (65536, 1024)])
def test_torch_flat_equals_faiss_flat(block_size, query_block):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((1003, 24)) + 2).astype(np.float32)
    Q = (rng.standard_normal((61, 24)) + 2).astype(np.float32)
    flat = search.TorchFlat(24, "cpu", block_size=block_size, query_block=query_block)
    flat.add(X[:500])
    flat.add(X[500:])
    assert (flat.d, flat.ntotal) == (24, 1003)
    np.testing.assert_array_equal(flat.reconstruct_n(10, 5), X[10:15])
    np.testing.assert_array_equal(flat.reconstruct(7), X[7])
    for k in (1, 5, 10):
        D, ids = search.search(flat, Q, k)
        assert D.dtype == np.float32 and ids.dtype == np.int64 and D.shape == ids.shape == (61, k)
        _same_neighbours(D, ids, *search.search(_flat(X), Q, k))


def test_torch_flat_breaks_ties_by_the_smaller_id_as_faiss():
    rng = np.random.default_rng(1)
    base = rng.integers(-3, 4, (5, 8)).astype(np.float32)  # integers: every distance exact, so ties are exact
    X = base[rng.integers(0, 5, 400)]
    Q = np.concatenate([base, rng.integers(-3, 4, (20, 8)).astype(np.float32)])
    ref = search.search(_flat(X), Q, 12)
    for block_size in (5, 64, 400):
        flat = search.TorchFlat(8, "cpu", block_size=block_size)
        flat.add(X)
        got = search.search(flat, Q, 12)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
    first = np.flatnonzero((X == base[0]).all(1))
    np.testing.assert_array_equal(got[1][0], first[:12])


def test_torch_flat_pads_like_faiss_when_k_exceeds_ntotal():
    rng = np.random.default_rng(2)
    X, Q = rng.standard_normal((4, 6), dtype=np.float32), rng.standard_normal((3, 6), dtype=np.float32)
    D_ref, ids_ref = search.search(_flat(X), Q, 7)
    assert (ids_ref[:, 4:] == -1).all() and (D_ref[:, 4:] == np.finfo(np.float32).max).all()
    flat = search.TorchFlat(6, "cpu", block_size=3)
    flat.add(X)
    D, ids = search.search(flat, Q, 7)
    np.testing.assert_array_equal(ids, ids_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5)
    D, ids = search.search(search.TorchFlat(6, "cpu"), Q, 2)
    assert (ids == -1).all() and (D == np.finfo(np.float32).max).all()


def test_torch_flat_errors_name_the_fix():
    flat = search.TorchFlat(4, "cpu")
    with pytest.raises(ValueError, match="queries has 3 dimensions but the index has 4"):
        flat.search(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="k=0 must be >= 1"):
        flat.search(np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="outside the 0 stored vectors"):
        flat.reconstruct_n(0, 1)


def test_to_device_keeps_cpu_indexes_on_the_cpu():
    X = np.random.default_rng(3).standard_normal((300, 8), dtype=np.float32)
    flat = _flat(X)
    assert search.to_device(flat, "cpu") is flat


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: exact kNN on the GPU")
def test_to_device_puts_a_flat_index_on_the_gpu(caplog):
    rng = np.random.default_rng(4)
    X, Q = rng.standard_normal((70001, 32), dtype=np.float32), rng.standard_normal((2500, 32), dtype=np.float32)
    flat = _flat(X)
    with caplog.at_level("INFO", logger="helpers.search"):
        moved = search.to_device(flat, "cuda")
    if faiss.get_num_gpus() > 0:
        pytest.skip("this faiss has GPUs: the index went to faiss's GPU")
    assert isinstance(moved, search.TorchFlat) and moved.device.type == "cuda" and moved.ntotal == len(X)
    assert "exact kNN in torch on cuda (this faiss has no GPU)" in caplog.text
    _same_neighbours(*search.search(moved, Q, 5), *search.search(flat, Q, 5))
    ivf = search.new_index(32, "ivf", nlist=16, train=X)
    assert search.to_device(ivf, "cuda") is ivf


def test_two_ranks_make_the_index_of_one_process(copy):
    import filecmp

    from helpers import bases, models
    from helpers.pipeline import distributed, load_profile, provenance

    p = load_profile("smoke", **copy.params, nproc=2)
    net, _ = models.load_model(p, train=False)
    images, indices = models.selection(p, "eval")
    key = provenance.expected(p, "bases")
    means = {layer: bases.load_basis(p.artifact("bases"), layer, key=key).mean_ for layer in p.layers}
    folder = copy.data / "index-2-ranks"
    meta = search.index_activations(net, images, p.layers, means, folder, search.index_key(p), indices=indices,
                                    cap=p.index_cap, kind=p.index_kind, seed=p.seed, batch_size=p.batch_size,
                                    profile=p.name, ranks=distributed.ranks(p))
    one = p.artifact("index")
    assert sorted(meta["files"]) == sorted(f.name for f in one.iterdir() if f.name != "meta.json")
    for name in meta["files"]:  # the FAISS files hold the vectors in order: equal bytes, equal contents
        assert filecmp.cmp(one / name, folder / name, shallow=False), name
    assert not [f for f in folder.iterdir() if f.name.count(".") > 1]  # the ranks' shards are gone
