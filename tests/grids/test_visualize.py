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
def quick_vis():
    """The quick profile's visualizer (artifacts made or reused by 01-03), its layers loaded once."""
    run.run("quick", only=["01", "02", "03"])
    return visualizer_for(load_profile("quick"))


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
