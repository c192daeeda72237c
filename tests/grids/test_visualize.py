import numpy as np
import pytest
from scipy.stats import spearmanr

from helpers.explorer import visualizer_for
from helpers.grids import visualize
from helpers.models.receptive import Field
from helpers import run
from helpers.pipeline.settings import load_profile


class Constant:
    """Images whose every pixel is the image's index."""

    def display(self, i):
        return np.full((28, 28, 1), i, np.uint8)


def test_grid_columns_are_targets_and_rows_are_neighbours():
    locs = np.array([[[c * 10 + r, 3, 3] for r in range(2)] for c in range(3)])  # (m=3, k=2, 3)
    image = visualize.patch_grid(Constant(), locs, Field(5, 1, -2), thumb=4, gap=1)
    assert image.shape == (2 * 5 - 1, 3 * 5 - 1, 1)
    for c in range(3):
        for r in range(2):
            assert image[r * 5 + 2, c * 5 + 2, 0] == c * 10 + r


def test_projection_range_is_the_sample_extremes():
    from helpers.bases.pca import NeuronBasis, PCABasis

    X = np.random.default_rng(0).standard_normal((1000, 6)) * [1, 3, 2, 5, 4, 0.5]
    for basis in (PCABasis().fit(X), NeuronBasis().fit(X)):
        lo, hi = visualize.projection_range(X, basis, chunk_size=77)
        t = basis.transform(X)
        np.testing.assert_allclose(lo, t.min(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(hi, t.max(0), rtol=1e-5, atol=1e-5)


def test_toy_activation_maximisation_drifts_off_v1_and_distance_minimisation_does_not():
    toy = visualize.toy_example()
    off_axis = lambda pts: np.abs(pts[:, 1] - toy["mean"][1])  # noqa: E731
    assert np.all(np.diff(off_axis(toy["activation_max"])) > 0)  # drifts further at every step
    # the extreme targets lie where data is sparse, so judge the typical point
    assert np.median(off_axis(toy["distance_min"])) < 0.25
    assert off_axis(toy["distance_min"]).mean() < off_axis(toy["activation_max"]).mean() / 2


@pytest.fixture(scope="module")
def quick_vis(tmp_path_factory):
    """The quick profile's visualizer, its artifacts made by 01-03 in a temporary folder (never the project's
    data/ and figures/), its layers loaded once."""
    root = tmp_path_factory.mktemp("quick")
    dirs = {"data_dir": str(root / "data"), "figures_dir": str(root / "figures")}
    run.run("quick", only=["01", "02", "03"], parameters=dirs, say=lambda text: None)
    return visualizer_for(load_profile("quick", **dirs))


def test_neighbours_along_a_top_pc_rise_with_the_target_index(quick_vis):
    """On the quick profile: Spearman >= 0.9."""
    vis = quick_vis
    for layer in ("conv2", "fc1"):
        g = vis.grid(layer, "pca", 0)
        info = vis.layer(layer)
        index, loc = info["index"], info["loc"]
        m, k, _ = g["locs"].shape
        rows = [int(np.flatnonzero((loc == l).all(1))[0]) for l in g["locs"].reshape(-1, 3)]
        vectors = np.stack([index.reconstruct(r) for r in rows])  # centred activations
        proj = vectors @ info["bases"]["pca"].components_[0]
        rho = spearmanr(np.repeat(np.arange(m), k), proj).correlation
        assert rho >= 0.9, (layer, rho)


class Counting:
    """A dataset's ``display``, counting the calls per image."""

    def __init__(self, images):
        self.images, self.calls = images, {}

    def display(self, i):
        self.calls[int(i)] = self.calls.get(int(i), 0) + 1
        return self.images.display(i)


def test_a_layers_grids_are_the_grids_drawn_one_by_one_with_each_image_decoded_once(quick_vis, monkeypatch):
    """One search per basis and one decode per image give the very grids :meth:`Visualizer.grid` draws."""
    vis = quick_vis
    counted = Counting(vis.images)
    monkeypatch.setattr(vis, "images", counted)
    for layer in ("conv2",):  # a map layer: many patches per image, some images in several grids
        counted.calls.clear()
        batched = visualize.layer_grids(vis, layer, 3)
        assert counted.calls and max(counted.calls.values()) == 1
        shown = set(counted.calls)
        for basis, grids in batched.items():
            for j, g in enumerate(grids):
                one = vis.grid(layer, basis, j)
                assert np.array_equal(g["locs"], one["locs"]) and np.array_equal(g["image"], one["image"])
                assert g["label"] == one["label"] and set(g["locs"][..., 0].ravel()) <= shown


def toy_visualizer(adjacent_repeats="allow", n=400, per_image=4, seed=0, **overrides):
    """A :class:`Visualizer` over a real flat index of ``n`` random centred vectors, ``per_image`` patches an
    image, its layer ``"toy"`` filled in by hand (no artifacts): 12 targets, 5 neighbours, PCA."""
    import faiss

    from helpers.bases.pca import PCABasis

    X = np.random.default_rng(seed).standard_normal((n, 6)) * [5, 1, 1, 0.5, 0.5, 0.2]
    basis = PCABasis().fit(X)
    index = faiss.IndexFlatL2(6)
    index.add((X - basis.mean_).astype(np.float32))
    loc = np.stack([np.arange(n) // per_image, np.arange(n) % per_image // 2, np.arange(n) % 2], 1)
    p = load_profile("smoke", n_targets=12, n_neighbours=5, adjacent_repeats=adjacent_repeats, **overrides)
    vis = visualize.Visualizer(p, Constant(), {"toy": None})
    vis._layers["toy"] = {"index": index, "loc": loc, "bases": {"pca": basis},
                          "ranges": {"pca": visualize.projection_range(X, basis)}}
    return vis


def _shared(locs, what):
    """How many adjacent column pairs of a grid's ``locs`` (m, k, 3) share a patch (``what(row)``)."""
    sets = [{what(r) for r in col} for col in locs]
    return sum(bool(a & b) for a, b in zip(sets, sets[1:]))


PATCH, IMAGE = (lambda r: tuple(int(v) for v in r)), (lambda r: int(r[0]))


def test_no_patch_is_in_two_adjacent_columns_with_adjacent_repeats_patch():
    allowed = toy_visualizer("allow").plan("toy", "pca", range(6))
    assert sum(_shared(g["locs"], PATCH) for g in allowed) > 0  # the data do repeat patches under "allow"
    for g in toy_visualizer("patch").plan("toy", "pca", range(6)):
        assert g["locs"].shape == (12, 5, 3) and _shared(g["locs"], PATCH) == 0
        assert all(len({PATCH(r) for r in col}) == 5 for col in g["locs"])


def test_no_image_is_in_two_adjacent_columns_with_adjacent_repeats_image():
    allowed = toy_visualizer("allow").plan("toy", "pca", range(6))
    assert sum(_shared(g["locs"], IMAGE) for g in allowed) > 0
    for g in toy_visualizer("image").plan("toy", "pca", range(6)):
        assert g["locs"].shape == (12, 5, 3) and _shared(g["locs"], IMAGE) == 0


@pytest.mark.parametrize("mode, per_image", [("patch", 4), ("image", 4), ("image", 50), ("grid", 4)])
def test_each_column_is_the_k_nearest_admissible_patches_by_brute_force(mode, per_image, monkeypatch):
    """Greedy, left to right: the ``k`` nearest by exact L2 whose patch (image) the column before lacks;
    with 50 patches an image (8 images) the first 20 neighbours run short and the search widens."""
    widths, search = [], visualize.search
    monkeypatch.setattr(visualize, "search", lambda index, q, k: widths.append(k) or search(index, q, k))
    vis = toy_visualizer(mode, per_image=per_image)
    info = vis.layer("toy")
    vectors = info["index"].reconstruct_n(0, info["index"].ntotal).astype(np.float64)
    what, b = (IMAGE if mode == "image" else PATCH), info["bases"]["pca"]
    for c, g in enumerate(vis.plan("toy", "pca", range(6))):
        before = set()
        for t, col in zip(g["t"], g["locs"]):
            dist = ((vectors - t * b.components_[c]) ** 2).sum(1)
            ranked = [i for i in np.argsort(dist, kind="stable") if what(info["loc"][i]) not in before]
            np.testing.assert_array_equal(col, info["loc"][ranked[:5]])
            before = (before if mode == "grid" else set()) | {what(r) for r in col}
    if mode == "grid":  # m k = 60 first: no patch twice in a grid
        assert widths[0] == 60
        assert all(len({PATCH(r) for r in g["locs"].reshape(-1, 3)}) == g["locs"].shape[0] * g["locs"].shape[1]
                   for g in vis.plan("toy", "pca", range(6)))
        return
    assert widths[0] == (10 if mode == "patch" else 20) and (max(widths) > 20) == (per_image == 50)


def test_allow_is_the_plain_k_nearest_search():
    from helpers.search import search

    vis = toy_visualizer("allow")
    info = vis.layer("toy")
    b = info["bases"]["pca"]
    for c, g in enumerate(vis.plan("toy", "pca", range(6))):
        _, ids = search(info["index"], g["t"][:, None] * b.components_[c][None, :], 5)
        np.testing.assert_array_equal(g["locs"], info["loc"][ids])


def test_an_index_too_small_for_no_adjacent_repeats_is_refused_with_the_fix():
    vis = toy_visualizer("image", n=40, per_image=40)  # a single image: the second column has no patch left
    with pytest.raises(ValueError, match="toy pca.*adjacent_repeats='image'.*adjacent_repeats='allow'.*index_cap"):
        vis.plan("toy", "pca", [0])


def test_the_grids_key_records_adjacent_repeats(copy):
    allow = visualize.grids_key(load_profile("smoke", **copy.params))
    assert allow == visualize.grids_key(load_profile("smoke", **copy.params, adjacent_repeats="allow"))
    assert allow != visualize.grids_key(load_profile("smoke", **copy.params, adjacent_repeats="patch"))
    assert allow["params"]["adjacent_repeats"] == "allow" and "nprobe" not in allow["params"]  # a flat index



class Probing:
    """Exact 1-D search over vectors ``0, 1, … n-1`` answering like an IVF index that probes only the ids
    below ``probed``: the others come back as id -1 (distance: float32 max) after the found ones."""

    d = 1

    def __init__(self, n, probed):
        self.ntotal, self.probed = n, probed

    def search(self, queries, k):
        ids = np.full((len(queries), k), -1, np.int64)
        for row, q in zip(ids, queries[:, 0]):
            found = np.argsort(np.abs(np.arange(self.probed) - q), kind="stable")[:k]
            row[:len(found)] = found
        return np.where(ids < 0, np.finfo(np.float32).max, 0).astype(np.float32), ids


def test_missing_neighbours_of_an_ivf_index_are_never_chosen():
    """Id -1 would be ``loc[-1]`` (image 5, never shown before): skipped, even where it would fill a column."""
    loc = np.stack([np.arange(12) // 2, np.zeros(12, int), np.arange(12) % 2], 1)  # 2 patches an image
    queries = np.zeros((1, 3, 1))
    ids = visualize.no_adjacent_repeats(Probing(12, 8), loc, queries, 3, "image")
    np.testing.assert_array_equal(ids, [[0, 1, 2], [4, 5, 6], [0, 1, 2]])
    with pytest.raises(ValueError, match="whole index"):  # the second column finds only 4, 5 outside images 0, 1
        visualize.no_adjacent_repeats(Probing(12, 6), loc, queries, 3, "image")
