import numpy as np
import pytest
import torch
import torchvision

from helpers import ablation, sampling
from helpers.models import LAYER_TABLE, MiniAlexNet, evaluate
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
        for layer in LAYER_TABLE:
            prefix, suffix = ablation.split(model, layer)
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
        prefix, suffix = ablation.split(mini, "fc1")
        replaced = suffix(torch.as_tensor(mean).expand(4, 256).clone())
    torch.testing.assert_close(pcs, replaced, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(neurons, replaced, rtol=1e-5, atol=1e-5)


def test_hook_output_equals_numpy_projection(mini):
    x = torch.randn(2, 1, 28, 28)
    V = _orthonormal(48)[:7]
    mean = np.random.default_rng(2).standard_normal(48).astype(np.float32)
    with torch.no_grad():
        with sampling.capture(mini, ["conv2"]) as out:
            mini(x)
        a = out["conv2"].numpy()
        with ablation.ablate(mini, "conv2", V, mean), sampling.capture(mini, ["conv2"]) as out:
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


def test_interrupted_sweep_resumes_without_recomputing(mini, tmp_path, monkeypatch):
    data = RandomImages(n=16, shape=(1, 28, 28))
    bases = {layer: {"neuron": (np.eye(d, dtype=np.float32), np.zeros(d, np.float32))}
             for layer, d in (("fc2", 256), ("fc3", 10))}
    counts = {"fc2": [0, 5], "fc3": [0, 10]}
    real = ablation.sweep_layer
    calls = []

    def failing(model, dataset, layer, *a, **k):
        calls.append(layer)
        if layer == "fc3" and len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, dataset, layer, *a, **k)

    monkeypatch.setattr(ablation, "sweep_layer", failing)
    with pytest.raises(KeyboardInterrupt):
        ablation.sweep(mini, data, ["fc2", "fc3"], bases, counts, tmp_path / "ab", batch_size=8)
    rows = ablation.sweep(mini, data, ["fc2", "fc3"], bases, counts, tmp_path / "ab", batch_size=8)
    assert calls == ["fc2", "fc3", "fc3"]
    assert [(r["layer"], r["n_ablated"]) for r in rows if r["order"] == "descending"] == [
        ("fc2", 0), ("fc2", 5), ("fc3", 0), ("fc3", 10)]
    assert len(rows) == 8


def test_count_grids():
    quick = ablation.count_grid(48, dense=False, extra=(27, 45))
    assert quick[:17] == list(range(17)) and 27 in quick and 45 in quick and quick[-1] == 48
    assert len(quick) < 30
    assert ablation.count_grid(64, dense=True) == list(range(65))
    fc = ablation.count_grid(4096, dense=True)
    assert fc[:65] == list(range(65)) and fc[65:67] == [80, 96] and fc[-1] == 4096


def test_split_refuses_other_architectures():
    with pytest.raises(ValueError, match="not AlexNet-shaped"):
        ablation.split(torch.nn.Sequential(torch.nn.Linear(2, 2)), "fc1")
