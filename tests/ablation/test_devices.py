"""The sweep's device paths: removals built on the device, the suffix's memory format, precision, CUDA."""
import numpy as np
import pytest
import torch

from helpers import ablation
from helpers.bases.ica import ICABasis
from helpers.bases.pca import NeuronBasis, PCABasis
from helpers.models import running
from helpers.models.sites import Site
from helpers.models.standins import MiniAlexNet
from tests.conftest import RandomImages

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the sweep on a GPU")


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((3000, 24)) @ rng.standard_normal((24, 24))).astype(np.float32) + 1.5
    pca = PCABasis().fit(X)
    return X, {"pca": pca, "neuron": NeuronBasis().fit(X), "ica": ICABasis(6).fit(X, pca=pca)}


@pytest.mark.parametrize("kind,which", [("pca", [0, 1, 2]), ("pca", list(range(16))), ("neuron", [3, 5, 7]),
                                        ("neuron", list(range(20))), ("ica", [0, 4]), ("ica", [1, 2, 3, 5])])
def test_a_removal_built_on_the_device_is_the_one_built_on_the_host(fitted, kind, which):
    """The GPU construction (float64 in torch, from the basis uploaded once) against numpy's: same form,
    same arrays; run here on the CPU device, which takes the same code."""
    X, b = fitted
    r = ablation.Removal(b[kind], which)
    form, host = r._host()
    again, device = r._on_device(torch.device("cpu"))
    assert again == form and form == {"pca": "low_rank" if len(which) < 12 else "dense", "neuron": "columns",
                                      "ica": "low_rank"}[kind]
    assert set(host) == set(device)
    for k in host:
        np.testing.assert_allclose(device[k].numpy(), host[k], rtol=1e-12, atol=1e-12)


def test_the_shared_basis_upload_is_made_once_per_basis_and_device(fitted):
    _, b = fitted
    cache = {}
    for n in (1, 2, 3):
        ablation.Removal(b["pca"], range(n), cache)._on_device(torch.device("cpu"))
    assert [k for k in cache if isinstance(k, tuple)] == [("basis", torch.device("cpu"))]


def test_the_suffix_gets_its_input_in_the_memory_format_asked_for():
    x = torch.randn(2, 8, 5, 5)
    site = Site("conv", "features.0", "map", (8, 5, 5))
    keep = lambda rows, g, dest: dest.copy_(rows)  # noqa: E731
    viewed = site.apply(x, keep)
    assert viewed.is_contiguous(memory_format=torch.channels_last) and not viewed.is_contiguous()
    plain = site.apply(x, keep, memory_format=torch.contiguous_format)
    assert plain.is_contiguous() and torch.equal(plain, x)
    stacked = site.apply(x, keep, groups=3, shared=True, memory_format=torch.contiguous_format)
    assert stacked.is_contiguous() and torch.equal(stacked, torch.cat([x] * 3))


def test_precision_switches_are_set_inside_and_restored_after():
    before = [getattr(m, a) for m, a, _, _ in running._fp32_switches()]
    with running.precision("tf32", "cpu"):
        assert [getattr(m, a) for m, a, _, _ in running._fp32_switches()] == [t for _, _, _, t in
                                                                               running._fp32_switches()]
    with running.precision("fp32", "cpu"):
        assert [getattr(m, a) for m, a, _, _ in running._fp32_switches()] == [i for _, _, i, _ in
                                                                               running._fp32_switches()]
    with running.precision("bf16", "cpu"):
        assert torch.nn.Linear(3, 2)(torch.ones(1, 3)).dtype == torch.bfloat16
    assert [getattr(m, a) for m, a, _, _ in running._fp32_switches()] == before
    with pytest.raises(ValueError, match="precision='fp16' is unknown"):
        with running.precision("fp16", "cpu"):
            pass


def _sweep_case(n: int, seed: int, d: int = 64):
    """A seeded MiniAlexNet, ``n`` random images, a random orthonormal basis and the neurons of a d-wide layer."""
    torch.manual_seed(0)
    comps = {"pca": np.linalg.qr(np.random.default_rng(1).standard_normal((d, d)))[0].T.astype(np.float32),
             "neuron": np.eye(d, dtype=np.float32)}
    return MiniAlexNet().eval(), RandomImages(n, (1, 28, 28), seed=seed), comps, np.zeros(d, np.float32)


def test_a_bf16_sweep_runs_and_stays_near_the_fp32_one_and_tf32_is_fp32_on_the_cpu():
    model, data, comps, mean = _sweep_case(40, seed=2)
    run = {mode: [r["top1"] for r in ablation.sweep_layer(model, data, "conv3", comps, mean, [0, 4, 32, 64],
                                                          batch_size=20, precision=mode)]
           for mode in ("fp32", "tf32", "bf16")}
    assert run["tf32"] == run["fp32"]
    assert np.abs(np.subtract(run["bf16"], run["fp32"])).max() <= 0.1  # 4 of 40 images at most


def test_the_ablation_key_names_the_precision_only_when_it_is_not_fp32(copy):
    from helpers.pipeline import load_profile

    plain, bf16 = (ablation.ablation_key(load_profile("smoke", **copy.params, precision=x)) for x in ("fp32", "bf16"))
    assert "precision" not in plain["params"] and bf16["params"]["precision"] == "bf16"
    assert plain == ablation.ablation_key(load_profile("smoke", **copy.params, nproc=2, batch_size=7))
    other = ablation.ablation_key(load_profile("smoke", **copy.params, ablation_eval=32))
    assert other["inputs"]["images"] != plain["inputs"]["images"]  # which images, not only how many


@CUDA
def test_the_sweep_on_cuda_counts_what_the_cpu_counts():
    model, data, comps, mean = _sweep_case(64, seed=5)
    counts = [0, 1, 8, 40, 64]
    cpu = ablation.sweep_layer(model, data, "conv2", comps, mean, counts, batch_size=32, device="cpu")
    gpu = ablation.sweep_layer(model, data, "conv2", comps, mean, counts, batch_size=32, device="cuda")
    diff = np.abs(np.array([r["top1"] for r in cpu]) - [r["top1"] for r in gpu]).max()
    assert diff <= 1 / 64  # one image whose logits tie within float rounding at most
