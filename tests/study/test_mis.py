"""The held-out-query machine score (helpers/study/mis.py) and its table (helpers/study/machine.py)."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers.pipeline.settings import load_profile
from helpers.study import mis
from helpers.study.machine import bootstrap_ci, interpretability_table


def _patches(n=3000, size=8, seed=0):
    """Grey patches whose brightness is uniform in [20, 235], with pixel noise."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(20, 235, n)
    pixels = level[:, None, None] + rng.normal(0, 12, (n, size, size))
    return np.clip(pixels, 0, 255).astype(np.uint8)[..., None], level


class Brightness(nn.Module):
    """A synthetic network: one unit that responds to the mean brightness of its input."""

    def forward(self, x):
        return x.float().mean(dim=(1, 2, 3))


def _scores(codes, E, kind="rms", band=0.05, alpha=None, seed=0):
    rng = np.random.default_rng(seed)
    t = mis.band_tasks(codes, band, 20, 9, rng)
    return mis.score(mis.deltas(E, t, kind), alpha)


def test_planted_unit_scores_near_one_and_random_direction_near_half():
    patches, _ = _patches()
    codes = Brightness()(torch.from_numpy(patches).permute(0, 3, 1, 2)).numpy()
    E = mis.Embedder().embed(patches)
    planted = [_scores(codes, E, band=q, seed=s) for q in (0.01, 0.05, 0.2) for s in range(3)]
    assert min(planted) >= 0.95
    rng = np.random.default_rng(1)
    random_dirs = [_scores(rng.normal(size=len(codes)), E, seed=s) for s in range(40)]
    assert abs(np.mean(random_dirs) - 0.5) < 0.06
    every = planted + random_dirs + [_scores(codes, E, alpha=a) for a in (0.16, 5.0, 500.0)]
    assert all(0 <= s <= 1 for s in every)
    # the sigmoid form: between chance and the hard score for a good unit, rising with alpha
    soft = [_scores(codes, E, alpha=a) for a in (0.16, 2.0, 50.0)]
    assert 0.5 < soft[0] < soft[1] < soft[2] <= 1, soft


def test_deltas_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(200, 6))
    codes = rng.normal(size=200)
    t = mis.band_tasks(codes, 0.2, 7, 4, np.random.default_rng(3))
    for kind in ("rms", "cosine"):
        def s(a, b):
            return -np.sqrt(np.mean((E[a] - E[b]) ** 2)) if kind == "rms" else float(E[a] @ E[b])
        expected = []
        for top, bottom in zip(t["top"], t["bottom"]):
            qp, qm, Rp, Rm = top[-1], bottom[-1], top[:-1], bottom[:-1]
            S = lambda q, R: np.mean([s(q, r) for r in R])  # noqa: E731
            expected.append((S(qp, Rp) - S(qp, Rm)) - (S(qm, Rp) - S(qm, Rm)))
        np.testing.assert_allclose(mis.deltas(E, t, kind), expected, rtol=1e-12)


def test_tasks_hold_their_queries_out():
    codes = np.random.default_rng(0).normal(size=1000)
    t = mis.band_tasks(codes, 0.05, 20, 9, np.random.default_rng(0))
    top_pool, bottom_pool = set(np.argsort(codes)[-50:]), set(np.argsort(codes)[:50])
    for name, pool, sign in (("top", top_pool, 1), ("bottom", bottom_pool, -1)):
        drawn = t[name]
        assert drawn.shape == (20, 10)
        assert set(drawn.ravel()) <= pool
        for row in drawn:
            assert len(set(row)) == 10  # the query is not among the references
            assert (np.diff(sign * codes[row]) <= 0).all()  # most extreme first, the query last
    with pytest.raises(ValueError, match="mis_bands"):
        mis.band_tasks(codes, 0.005, 20, 9, np.random.default_rng(0))


def test_score_hard_and_soft():
    assert mis.score([1.0, -1.0, 0.0, 2.0], None) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert mis.score([0.0], 0.16) == pytest.approx(0.5)
    assert mis.score([1.0], 2.0) == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert mis.alpha_for("dreamsim", None) == mis.PUBLISHED_ALPHA == 0.16
    assert mis.alpha_for("pixels", None) is None and mis.alpha_for("pixels", 3) == 3.0


def test_network_embedder_reads_the_last_linear_input_and_removes_its_hook():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 3))
    emb = mis.NetworkEmbedder("toy", net, size=8, channels=1, mean=[0.5], std=[0.25])
    patches, _ = _patches(10)
    got = emb.embed(patches)
    x = (torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    expected = nn.functional.normalize(torch.relu(net[1](x.flatten(1))), dim=1).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not net[3]._forward_pre_hooks
    assert emb.kind == "cosine"


def test_model_similarity_uses_another_shipped_network():
    from helpers.pipeline.settings import load_profile

    p = load_profile("smoke")
    emb = mis.embedder("model:mini_resnet", p)
    patches, _ = _patches(6, size=16)
    E = emb.embed(patches)
    assert E.shape[0] == 6 and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="being explained"):
        mis.embedder("model:mini_alexnet", p)
    with pytest.raises(ValueError, match="pixels"):
        mis.embedder("shapes", p)


def test_dreamsim_missing_is_one_clear_error(monkeypatch):
    found = mis.importlib.util.find_spec
    monkeypatch.setattr(mis.importlib.util, "find_spec", lambda name: None if name == "dreamsim" else found(name))
    monkeypatch.setitem(__import__("sys").modules, "dreamsim", None)  # an import of it fails
    with pytest.raises(ValueError, match=r"needs the dreamsim package and its weights: pip install -e '\.\[paper\]'"):
        mis.embedder("dreamsim")
    (need,) = mis.similarity_needs(load_profile("paper"))
    assert need.what == "DreamSim" and need.fetch is None
    assert need.line().startswith("DreamSim: the dreamsim package is not installed (setting mis_similarity='dreamsim' "
                                  "(profile paper), 06's held-out-query score); pip install -e '.[paper]'")


def test_dreamsim_weights_not_cached_are_fetched_or_refused_with_the_fix(monkeypatch, tmp_path):
    """The package is there (its spec found), its cache folder empty, and the download fails (offline)."""
    from helpers import run

    monkeypatch.setattr(mis.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (need,) = mis.similarity_needs(load_profile("paper"))
    assert need.what == "DreamSim's weights" and str(tmp_path / "torch" / "hub" / "dreamsim") in need.why

    def offline():
        raise OSError("no route to host")

    monkeypatch.setattr(mis, "_fetch_dreamsim", offline)
    need = mis.similarity_needs(load_profile("paper"))[0]
    said = []
    with pytest.raises(ValueError) as e:
        run.provide([need], said.append)
    assert said == [f"fetching DreamSim's weights ({need.why})"]
    assert f"and fetching failed (OSError: no route to host); download {mis.DREAMSIM_URL} and unzip it into " \
           f"{tmp_path / 'torch' / 'hub' / 'dreamsim'}, or give -p mis_similarity=pixels" in str(e.value)
    for name in mis.DREAMSIM_FILES:  # the ensemble's files in the cache: nothing is missing
        (tmp_path / "torch" / "hub" / "dreamsim" / name).mkdir(parents=True)
    assert mis.similarity_needs(load_profile("paper")) == []


def test_another_networks_similarity_is_checked_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"setting mis_similarity='model:mini_resnett' \(profile quick\): "
                                         r"model='mini_resnett' is unknown \(close: 'mini_resnet'"):
        mis.similarity_needs(load_profile("quick", mis_similarity="model:mini_resnett"))
    assert mis.similarity_needs(load_profile("quick", mis_similarity="model:mini_resnet")) == []  # shipped weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (need,) = mis.similarity_needs(load_profile("quick", mis_similarity="model:resnet18"))
    assert need.what == "resnet18's weights IMAGENET1K_V1" and need.fetch is not None
    assert mis.similarity_needs(load_profile("quick", mis_similarity="pixels")) == []


def test_bootstrap_interval_and_table():
    values = np.r_[np.ones(12), np.zeros(4)]
    low, high = bootstrap_ci(values, seed=0)
    assert low < values.mean() < high and 0 <= low and high <= 1
    assert bootstrap_ci(values, seed=0) == (low, high)
    scores = pd.DataFrame({"layer": ["fc1"] * 4, "basis": ["neuron", "neuron", "pca", "pca"], "component": [1, 2, 1, 2],
                           "band": [0.05] * 4, "n_tasks": 20, "delta": 0.0, "score": [0.5, 0.7, 1.0, 0.9],
                           "hard": 0.0})
    grids = pd.DataFrame({"layer": ["fc1"] * 4, "basis": ["pca", "pca", "neuron", "neuron"], "component": [1, 2, 1, 2],
                          "grids": ["allow", "patch", "allow", "patch"], "correct": [1.0, 0.0, 1.0, 0.5]})
    table = interpretability_table(scores, grids, "pixels")
    assert list(table.measure.unique()) == ["grid observer (adjacent repeats: allow)",
                                            "grid observer (adjacent repeats: patch)",
                                            "held-out queries (pixels, top/bottom 5 %)"]
    row = table[(table.basis == "pca") & table.measure.str.startswith("held")].iloc[0]
    assert row.score == pytest.approx(0.95) and row.n == 2
    assert list(table[table.measure.str.startswith("held")].basis) == ["pca", "neuron"]  # the kinds' order
