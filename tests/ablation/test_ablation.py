import json
import os

import numpy as np
import pytest
import torch
import torchvision

from helpers import ablation, sampling
from helpers.ablation import accuracy
from helpers.models.families import AlexNetFamily
from helpers.models.running import evaluate
from helpers.models.sites import sites, split
from helpers.models.standins import MiniAlexNet
from helpers.images.common import images_key
from helpers.pipeline import keys
from tests.conftest import RandomImages


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return MiniAlexNet().eval()


def _orthonormal(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q.T.astype(np.float32)


@pytest.mark.parametrize("make", [MiniAlexNet, lambda: torchvision.models.alexnet(weights=None)],
                         ids=["mini_alexnet", "alexnet"])
def test_prefix_then_suffix_equals_the_full_forward(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(3, 1, 28, 28) if isinstance(model, MiniAlexNet) else torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        full = model(x)
        for layer, path in AlexNetFamily().aliases(model).items():
            prefix, suffix, at_cut = split(model, path)
            assert at_cut  # AlexNet cuts right after the layer: nothing of it is recomputed per setting
            torch.testing.assert_close(suffix(prefix(x)), full, rtol=1e-5, atol=1e-5, msg=layer)


def test_zero_ablated_vectors_change_nothing(mini):
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        plain = mini(x)
        with ablation.ablate(mini, "conv3", np.zeros((0, 64)), np.ones(64)):
            same = mini(x)
    torch.testing.assert_close(plain, same, rtol=0, atol=0)


def test_all_pcs_all_neurons_and_the_mean_give_the_same_logits(mini):
    x = torch.randn(4, 1, 28, 28)
    mean = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    with torch.no_grad():
        with ablation.ablate(mini, "fc1", _orthonormal(256), mean):
            pcs = mini(x)
        with ablation.ablate(mini, "fc1", np.eye(256, dtype=np.float32), mean):
            neurons = mini(x)
        _, suffix, _ = split(mini, "classifier.1")
        replaced = suffix(torch.as_tensor(mean).expand(4, 256).clone())
    torch.testing.assert_close(pcs, replaced, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(neurons, replaced, rtol=1e-5, atol=1e-5)


def test_hook_output_equals_numpy_projection(mini):
    x = torch.randn(2, 1, 28, 28)
    V = _orthonormal(48)[:7]
    mean = np.random.default_rng(2).standard_normal(48).astype(np.float32)
    with torch.no_grad():
        with sampling.capture(mini, sites(mini, ["conv2"], torch.zeros(1, 28, 28))) as out:
            mini(x)
        a = out["conv2"].numpy()
        with ablation.ablate(mini, "conv2", V, mean), sampling.capture(mini, sites(mini, ["conv2"], torch.zeros(1, 28, 28))) as out:
            mini(x)
    a = a.transpose(0, 2, 3, 1)  # (B, H, W, C)
    expect = a - ((a - mean) @ V.T) @ V
    np.testing.assert_allclose(out["conv2"].numpy().transpose(0, 2, 3, 1), expect, atol=1e-5)


def test_sweep_matches_naive_full_forward_per_setting(mini):
    data = RandomImages(n=40, shape=(1, 28, 28))
    comps = {"pca": _orthonormal(64, 3), "neuron": np.eye(64, dtype=np.float32)}
    mean = np.random.default_rng(4).standard_normal(64).astype(np.float32) * 0.1
    rows = ablation.sweep_layer(mini, data, "conv3", comps, mean, [0, 3, 64], batch_size=16, max_rows=40)
    assert len(rows) == 2 * 2 * 3
    for r in rows:
        V = comps[r["basis"]]
        S = V[: r["n_ablated"]] if r["order"] == "descending" else V[64 - r["n_ablated"]:]
        with ablation.ablate(mini, "conv3", S, mean):
            naive = evaluate(mini, data, batch_size=16, device="cpu")
        assert r["top1"] == pytest.approx(naive, abs=1e-12), r
    unablated = evaluate(mini, data, device="cpu")
    assert all(r["top1"] == unablated for r in rows if r["n_ablated"] == 0)


class Fitted:
    """A fitted basis as the sweep reads it: components, mean, explained-variance ratio."""

    def __init__(self, d):
        self.components_ = np.eye(d, dtype=np.float32)
        self.mean_ = np.zeros(d, np.float32)
        self.explained_variance_ratio_ = np.full(d, 1 / d)


FITTED = {layer: {"neuron": Fitted(d)} for layer, d in (("fc2", 256), ("fc3", 10))}
COUNTS = {"fc2": [0, 5], "fc3": [0, 10]}


def _sweep(mini, data, folder, **kw):
    key = keys.key({"layers": ["fc2", "fc3"], "counts": COUNTS}, {"images": images_key(data, kw.get("indices"))})
    return ablation.sweep(mini, data, ["fc2", "fc3"], FITTED, folder, key, counts=COUNTS, batch_size=8, **kw)


def test_interrupted_sweep_resumes_without_recomputing(mini, tmp_path, monkeypatch):
    data = RandomImages(n=16, shape=(1, 28, 28))
    real = ablation.sweep_layer
    calls = []

    def failing(model, dataset, layer, *a, **k):
        calls.append(layer)
        if layer == "fc3" and len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, dataset, layer, *a, **k)

    monkeypatch.setattr(accuracy, "sweep_layer", failing)
    with pytest.raises(KeyboardInterrupt):
        _sweep(mini, data, tmp_path / "ab")
    rows = _sweep(mini, data, tmp_path / "ab")
    assert calls == ["fc2", "fc3", "fc3"]
    assert [(r["layer"], r["n_ablated"]) for r in rows if r["order"] == "descending"] == [
        ("fc2", 0), ("fc2", 5), ("fc3", 0), ("fc3", 10)]
    assert len(rows) == 8


@pytest.mark.parametrize("crash_at", ["the first write after resuming", "renaming the resumed layer"])
def test_a_crash_while_resuming_loses_no_finished_layer(mini, tmp_path, monkeypatch, crash_at):
    """The old sweep rewrote ablation.partial/ablation.csv in place when it resumed; a crash then lost fc2."""
    data = RandomImages(n=16, shape=(1, 28, 28))
    whole = _sweep(mini, data, tmp_path / "whole")
    real_layer = ablation.sweep_layer

    def stop_at_fc3(model, dataset, layer, *a, **k):
        if layer == "fc3":
            raise KeyboardInterrupt
        return real_layer(model, dataset, layer, *a, **k)

    monkeypatch.setattr(accuracy, "sweep_layer", stop_at_fc3)
    with pytest.raises(KeyboardInterrupt):
        _sweep(mini, data, tmp_path / "ab")  # fc2 finished, fc3 interrupted
    monkeypatch.setattr(accuracy, "sweep_layer", real_layer)

    def crash(*a, **k):
        raise KeyboardInterrupt(f"crash at {crash_at}")

    if crash_at == "the first write after resuming":
        monkeypatch.setattr(accuracy.csv, "DictWriter", crash)
    else:
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _sweep(mini, data, tmp_path / "ab")
    monkeypatch.undo()
    assert not (tmp_path / "ab").exists()
    progress = json.loads((tmp_path / "ab.partial" / "progress.json").read_text())
    assert progress["layers_done"] == ["fc2"]
    assert ablation.read_rows(tmp_path / "ab.partial" / "fc2.csv") == [r for r in whole if r["layer"] == "fc2"]
    calls = []
    monkeypatch.setattr(accuracy, "sweep_layer", lambda m, d, layer, *a, **k: calls.append(layer) or
                        real_layer(m, d, layer, *a, **k))
    assert _sweep(mini, data, tmp_path / "ab") == whole
    assert calls == ["fc3"]  # fc2 was kept, not recomputed
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == ["ablation.csv", "meta.json"]


def test_other_eval_images_recompute_the_sweep(mini, tmp_path):
    """The old sidecar recorded how many images, not which: other images of the same count were reused."""
    data = RandomImages(n=32, shape=(1, 28, 28), seed=1)
    first = _sweep(mini, data, tmp_path / "ab", indices=np.arange(0, 16))
    again = _sweep(mini, data, tmp_path / "ab", indices=np.arange(16, 32))
    meta = json.loads((tmp_path / "ab" / "meta.json").read_text())
    assert meta["inputs"]["images"]["n"] == 16
    expect = [r["top1"] for r in _sweep(mini, data, tmp_path / "fresh", indices=np.arange(16, 32))]
    assert [r["top1"] for r in again] == expect and [r["top1"] for r in first] != expect


def test_count_grids():
    quick = ablation.count_grid(48, dense=False, extra=(27, 45))
    assert quick[:17] == list(range(17)) and 27 in quick and 45 in quick and quick[-1] == 48
    assert len(quick) < 30
    assert ablation.count_grid(64, dense=True) == list(range(65))
    fc = ablation.count_grid(4096, dense=True)
    assert fc[:65] == list(range(65)) and fc[65:67] == [80, 96] and fc[-1] == 4096


class _Plain(torch.nn.Module):
    """A model no family describes: the sweep falls back to full forward passes."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=2)
        self.head = torch.nn.Linear(8 * 13 * 13, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


class _LooksLikeAlexNet(torch.nn.Module):
    """``features``/``avgpool``/``classifier``, but no flatten between: the AlexNet stages do not compose."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2), torch.nn.ReLU())
        self.avgpool = torch.nn.AdaptiveAvgPool2d(2)
        self.classifier = torch.nn.Sequential(torch.nn.Conv2d(8, 10, 2), torch.nn.Flatten(1))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def _families():
    from helpers.models.standins import MiniResNet, MiniViT

    torch.manual_seed(0)
    return {"mini_alexnet": (MiniAlexNet(), ["conv2", "fc1"]),
            "mini_resnet": (MiniResNet(), ["conv1", "layer2.0.conv2", "layer3", "fc"]),
            "mini_vit": (MiniViT(), ["conv_proj", "encoder.layers.encoder_layer_1.self_attention",
                                     "encoder.layers.encoder_layer_2.mlp.3", "heads.head"]),
            "any module": (_Plain(), ["conv", "head"]),
            "mismatched layout": (_LooksLikeAlexNet(), ["features.0", "classifier.0"])}


class _OwnLabels(torch.utils.data.Dataset):
    """Random images labelled with the model's own predictions: unablated top-1 is 1, ablation lowers it."""

    def __init__(self, model, n=24):
        self.x = RandomImages(n=n, shape=(1, 28, 28)).x
        with torch.no_grad():
            self.y = model.eval()(self.x).argmax(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@pytest.mark.parametrize("family", ["mini_alexnet", "mini_resnet", "mini_vit", "any module", "mismatched layout"])
def test_every_family_sweeps_what_full_forward_passes_under_ablate_give(family, caplog):
    model, layers = _families()[family]
    data = _OwnLabels(model)
    example, lowest = data.x[0], []
    for layer, site in sites(model, layers, example).items():
        d = site.shape[0]
        comps = {"pca": _orthonormal(d, 5), "neuron": np.eye(d, dtype=np.float32)}
        mean = np.random.default_rng(6).standard_normal(d).astype(np.float32) * 3
        counts = [0, 1, d // 2, d]
        rows = ablation.sweep_layer(model, data, layer, comps, mean, counts, batch_size=10, max_rows=30)
        for r in rows:
            V = comps[r["basis"]]
            S = V[: r["n_ablated"]] if r["order"] == "descending" else V[d - r["n_ablated"]:]
            with ablation.ablate(model, layer, S, mean):
                naive = evaluate(model, data, batch_size=10, device="cpu")
            assert r["top1"] == pytest.approx(naive, abs=1e-12), (layer, r)
        assert [r["top1"] for r in rows if r["n_ablated"] == 0] == [1.0] * 4
        lowest.append(min(r["top1"] for r in rows))
        with torch.no_grad(), ablation.ablate(model, layer, comps["pca"][:0], mean):
            ablated = model(data.x)
        assert torch.equal(ablated, model(data.x))  # nothing ablated: the unablated logits, bit for bit
    assert min(lowest) < 1.0, "ablation changed no prediction: the test would not see a wrong sweep"
    fell_back = "do not compose to its output" in caplog.text
    assert fell_back == (family == "mismatched layout")


@pytest.fixture(scope="module")
def every_basis(mini):
    """Every kind of basis fitted on mini_alexnet's conv3 (pre-ReLU, 64 channels) over random images."""
    from helpers.bases.ica import ICABasis
    from helpers.bases.nmf import NMFBasis
    from helpers.bases.pca import NeuronBasis, PCABasis
    from helpers.bases.sae import SAEBasis

    got = []
    handle = mini.get_submodule("features.6").register_forward_hook(lambda m, a, out: got.append(out.clone()))
    with torch.no_grad():
        mini(torch.randn(48, 1, 28, 28, generator=torch.Generator().manual_seed(3)))
    handle.remove()
    X = got[0].permute(0, 2, 3, 1).reshape(-1, 64).numpy()
    pca = PCABasis().fit(X)
    return X, {"pca": pca, "neuron": NeuronBasis().fit(X), "ica": ICABasis(8).fit(X, pca=pca),
               "nmf": NMFBasis(8).fit(X), "sae": SAEBasis(128, 8, epochs=2, batch_size=256).fit(X)}


@pytest.mark.parametrize("kind", ["pca", "neuron", "ica", "nmf", "sae"])
def test_removing_nothing_leaves_the_logits_bit_for_bit_for_every_basis(mini, every_basis, kind):
    _, fitted = every_basis
    x = torch.randn(5, 1, 28, 28)
    data = RandomImages(12, (1, 28, 28), seed=4)
    with torch.no_grad():
        plain = mini(x)
        with ablation.ablate(mini, "conv3", ablation.Removal(fitted[kind], [])):
            same = mini(x)
    torch.testing.assert_close(plain, same, rtol=0, atol=0)
    unablated = ablation.accuracies(mini, data, "conv3", [np.zeros((0, 64))], np.zeros(64), batch_size=5)
    removed = ablation.accuracies(mini, data, "conv3", [ablation.Removal(fitted[kind], [])], None, batch_size=5)
    assert removed.tolist() == unablated.tolist()


@pytest.mark.parametrize("kind", ["pca", "ica", "nmf", "sae"])
def test_a_removal_is_the_codes_of_the_removed_vectors_taken_out(every_basis, kind):
    """``a - (z_S - b_S) W_S`` against the basis' own numpy transform; the SAE zeroes latents (b = 0)."""
    X, fitted = every_basis
    b, S = fitted[kind], [0, 2, 5]
    z = b.transform(X)[:, S]
    expect = X - (z - np.asarray(b.baseline_)[S]) @ b.components_[S]
    got = ablation.Removal(b, S)(torch.from_numpy(X).double()).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-6 * np.abs(X).max())
    if kind == "sae":
        assert not np.asarray(b.baseline_).any()
        everything = ablation.Removal(b, np.arange(len(b.components_)))(torch.from_numpy(X).double()).numpy()
        error = X - b.inverse_transform(b.transform(X))  # all latents zeroed: the offset plus the SAE's error
        np.testing.assert_allclose(everything, b.offset_ + error, atol=1e-6 * np.abs(X).max())



def test_two_ranks_give_the_ablation_csv_of_one_process(copy):
    """05 run by the runner with -p nproc=2: its kernel is the driver of two gloo ranks."""
    import shutil

    from helpers import run
    from helpers.pipeline import load_profile

    folder = load_profile("smoke", **copy.params).artifact("ablation")
    one = (folder / "ablation.csv").read_bytes()
    shutil.rmtree(folder)
    said = []
    run.run("smoke", only=["05"], parameters={**copy.params, "nproc": 2}, say=said.append)
    assert said[0] == f"plan (smoke, {copy.data}): 05_ablation"  # nproc is in no key: nothing else reruns
    assert len(one.splitlines()) > 100 and (folder / "ablation.csv").read_bytes() == one
    executed = (copy.data / "notebooks" / "05_ablation.ipynb").read_text()
    assert "helpers.ablation.accuracy:sweep_rank: 2 ranks (gloo)" in executed
    assert "helpers.ablation.accuracy:sweep_rank: 2 ranks done in" in executed
