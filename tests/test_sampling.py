import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from helpers import sampling
from helpers.models.families import AlexNetFamily
from helpers.models.sites import sites
from helpers.models.standins import MiniAlexNet
from helpers.images.common import images_key
from helpers.pipeline import keys, store
from tests.conftest import RandomImages

LAYER_TABLE = AlexNetFamily().aliases(torchvision.models.alexnet())
ALL = tuple(LAYER_TABLE)


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).eval()


def _recompute(model, x, layer):
    """The layer's output computed separately, by slicing torchvision's Sequentials."""
    part, i = LAYER_TABLE[layer].split(".")
    i = int(i)
    with torch.no_grad():
        if part == "features":
            return model.features[: i + 1](x)
        h = torch.flatten(model.avgpool(model.features(x)), 1)
        return model.classifier[: i + 1](h)


def key_of(data, layers=ALL, seed=0, indices=None, model="unnamed") -> dict:
    """A sample's key as :func:`helpers.sampling.sample_key` makes it from a profile, from the values here."""
    return keys.key({"layers": list(layers), "seed": seed}, {"model": model, "images": images_key(data, indices)})


def _sample(model, data, folder, **kw):
    kw.setdefault("batch_size", 4)
    layers = kw.pop("layers", ALL)
    key = key_of(data, layers, kw.get("seed", 0), kw.get("indices"))
    sampling.sample_activations(model, data, layers, folder, key, **kw)
    return {layer: sampling.open_sample(folder, layer) for layer in kw.get("layers_read", ALL)}


def test_alexnet_sample_is_pre_relu_and_equals_recomputed_outputs(alexnet, tmp_path):
    data = RandomImages(n=6)
    sample = _sample(alexnet, data, tmp_path / "s", seed=0)
    for layer in ALL:
        X, loc = (np.array(a) for a in sample[layer])
        assert (X < 0).any(), f"{layer}: no negative values, so not pre-ReLU"
        out = _recompute(alexnet, data.x[loc[:, 0]], layer)
        if out.ndim == 4:
            expect = out[torch.arange(len(loc)), :, loc[:, 1], loc[:, 2]]
        else:
            expect = out
            assert (loc[:, 1:] == -1).all()
        np.testing.assert_allclose(X, expect.numpy(), rtol=1e-4, atol=1e-4, err_msg=layer)


def test_alexnet_layer_shapes_match_the_paper_table(alexnet):
    shapes = sampling.layer_shapes(alexnet, torch.zeros(3, 224, 224), ALL)
    assert list(shapes) == list(ALL)  # execution order
    assert shapes["conv1"] == (64, 55, 55) and shapes["conv2"] == (192, 27, 27)
    assert [shapes[f"conv{i}"][0] for i in (3, 4, 5)] == [384, 256, 256]
    assert shapes["fc1"] == (4096,) and shapes["fc3"] == (1000,)


def test_capture_without_a_copy_would_be_post_relu(alexnet):
    """The pitfall the sampler avoids: torchvision's in-place ReLU rewrites the hooked tensor."""
    with torch.no_grad(), sampling.capture(alexnet, sites(alexnet, ["conv1"], torch.zeros(3, 224, 224)), pick=lambda n, out: out) as out:
        alexnet(torch.randn(1, 3, 224, 224))
    assert (out["conv1"] >= 0).all()


def test_hooks_are_removed_even_after_an_error(alexnet):
    with pytest.raises(RuntimeError):
        with sampling.capture(alexnet, sites(alexnet, ALL, torch.zeros(3, 224, 224))):
            alexnet(torch.zeros(1, 5, 224, 224))  # wrong channel count
    assert all(not m._forward_hooks for m in alexnet.modules())


def test_same_seed_same_sample_other_seed_other_positions(tmp_path):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=40, shape=(1, 28, 28))
    a = _sample(model, data, tmp_path / "a", seed=0)
    a2 = _sample(model, data, tmp_path / "a2", seed=0)
    b = _sample(model, data, tmp_path / "b", seed=0, batch_size=7)
    c = _sample(model, data, tmp_path / "c", seed=1)
    for layer in ALL:
        np.testing.assert_array_equal(a[layer][0], a2[layer][0])
        np.testing.assert_array_equal(a[layer][1], a2[layer][1])
        # positions do not depend on the batch size; values only up to float rounding
        np.testing.assert_array_equal(a[layer][1], b[layer][1])
        np.testing.assert_allclose(a[layer][0], b[layer][0], atol=1e-6)
    for layer in ("conv1", "conv3", "conv5"):
        assert (a[layer][1][:, 1:] != c[layer][1][:, 1:]).any()
    np.testing.assert_array_equal(a["fc1"][0], c["fc1"][0])  # fc layers have no positions


def test_positions_are_spread_over_the_map():
    pos = sampling.draw_positions({"conv1": (4, 5, 6)}, 5000, seed=0)["conv1"]
    assert pos[:, 0].min() == 0 and pos[:, 0].max() == 4 and pos[:, 1].max() == 5
    counts = np.bincount(pos[:, 0] * 6 + pos[:, 1], minlength=30)
    assert counts.min() > 100  # uniform: about 167 each


def test_interrupted_sample_resumes_without_recomputing(tmp_path):
    torch.manual_seed(0)
    model = MiniAlexNet().eval()
    whole = _sample(model, RandomImages(n=30, shape=(1, 28, 28)), tmp_path / "whole", seed=0)

    broken = RandomImages(n=30, shape=(1, 28, 28), fail_at=17)
    with pytest.raises(KeyboardInterrupt):
        sampling.sample_activations(model, broken, ALL, tmp_path / "s", key_of(broken), seed=0, batch_size=4,
                                    flush_seconds=0)
    assert not (tmp_path / "s").exists() and (tmp_path / "s.partial").exists()
    progress = store.read_json(tmp_path / "s.partial" / "progress.json")
    assert progress["summary"] == "16 of 30 images"
    assert store.read_json(tmp_path / "s.partial" / "slots-0-30.json")["next"] == 16

    again = RandomImages(n=30, shape=(1, 28, 28))
    sampling.sample_activations(model, again, ALL, tmp_path / "s", key_of(again), seed=0, batch_size=4)
    assert again.reads == 30 - 16 + 1  # the rest, plus the shape probe
    for layer in ALL:
        X, loc = sampling.open_sample(tmp_path / "s", layer)
        np.testing.assert_array_equal(X, whole[layer][0])
        np.testing.assert_array_equal(loc, whole[layer][1])


def test_finished_sample_is_reused_and_other_settings_remake_it(tmp_path, capsys):
    torch.manual_seed(0)
    model, data = MiniAlexNet().eval(), RandomImages(n=8, shape=(1, 28, 28))
    first = sampling.sample_activations(model, data, ["conv1"], tmp_path / "s", key_of(data, ["conv1"]), seed=0)
    data.reads = 0
    again = sampling.sample_activations(model, data, ["conv1"], tmp_path / "s", key_of(data, ["conv1"]), seed=0)
    assert again["hash"] == first["hash"]
    assert data.reads == 1  # only the shape probe
    other = sampling.sample_activations(model, data, ["conv1"], tmp_path / "s", key_of(data, ["conv1"], seed=1),
                                        seed=1)
    assert other["hash"] != first["hash"] and other["params"]["seed"] == 1
    assert "remaking" in capsys.readouterr().err
    with pytest.raises(store.StaleArtifactError, match=r"seed=1 \(now 0\)"):
        sampling.open_sample(tmp_path / "s", "conv1", key=store.read_meta(tmp_path / "s") | {"params": {
            "layers": ["conv1"], "seed": 0}})
    with pytest.raises(ValueError, match=r"layer='fc1' is not in the sample"):
        sampling.open_sample(tmp_path / "s", "fc1")


def test_the_sample_key_names_the_weights_images_layers_and_seed_of_the_profile():
    """One key function: other weights, images, layers or seed are another sample."""
    from helpers.pipeline import load_profile

    base = sampling.sample_key(load_profile("smoke", retrain=False))  # shipped weights: no model to train first
    assert base["params"] == {"layers": list(load_profile("smoke").layers), "seed": 0}
    assert base["inputs"]["images"]["n"] == 320
    for change, where in [({"seed": 1}, "params"), ({"layers": "conv1"}, "params"), ({"n_sample": 100}, "inputs"),
                          ({"model": "mini_resnet"}, "inputs")]:
        other = sampling.sample_key(load_profile("smoke", retrain=False, **change))
        assert other[where] != base[where], change
    assert "helpers/models/running.py" in base["code"] and "helpers/sampling.py" in base["code"]


def test_unknown_layer_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"layer .conv9. is not a module of MiniAlexNet; closest module paths: \[.conv5."):
        sampling.sample_activations(MiniAlexNet(), RandomImages(2, (1, 28, 28)), ["conv9"], tmp_path / "s", {})


def test_empty_selection_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no images to sample"):
        sampling.sample_activations(MiniAlexNet(), RandomImages(2, (1, 28, 28)), ["conv1"], tmp_path / "s", {},
                                    indices=[])


def _ranked_sample(p, folder, **kw):
    from helpers import models
    from helpers.pipeline import distributed

    net, _ = models.load_model(p, train=False)
    images, indices = models.selection(p, "sample")
    return sampling.sample_activations(net, images, p.layers, folder, sampling.sample_key(p), indices=indices,
                                       seed=p.seed, batch_size=p.batch_size, device=p.device, profile=p.name,
                                       ranks=distributed.ranks(p), **kw)


def test_two_ranks_write_the_bytes_of_one_process(copy):
    import filecmp

    from helpers.pipeline import load_profile

    p = load_profile("smoke", **copy.params, nproc=2)
    meta = _ranked_sample(p, copy.data / "sample-2-ranks")
    one = p.artifact("sample")
    names = sorted(f.name for f in one.glob("*.npy"))
    assert names and names == sorted(meta["files"])
    for name in names:
        assert filecmp.cmp(one / name, copy.data / "sample-2-ranks" / name, shallow=False), name


def test_a_rank_killed_mid_sample_resumes_to_the_uninterrupted_bytes(copy):
    """Rank 1 is SIGKILLed once it has recorded progress; the rerun (2 ranks) resumes and equals one process."""
    import filecmp
    import os
    import signal
    import threading

    from helpers.pipeline import distributed, load_profile

    p = load_profile("smoke", **copy.params, nproc=2, n_sample=6400)
    folder, killed = copy.data / "sample-killed", []

    def kill_rank_1():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for job in (p.data_path / ".ranks").glob("*/pid-1"):
                records = list(Path(f"{folder}.partial").glob("slots-3200-*.json"))  # rank 1's shard
                if records and json.loads(records[0].read_text())["next"] > 3200:
                    os.kill(int(job.read_text()), signal.SIGKILL)
                    killed.append(int(job.read_text()))
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_rank_1)
    watcher.start()
    with pytest.raises(distributed.RankError, match="rank 1 of 2 failed.*killed by signal 9"):
        _ranked_sample(p, folder, flush_seconds=0.0)
    watcher.join()
    assert killed
    record = json.loads(next(Path(f"{folder}.partial").glob("slots-3200-*.json")).read_text())
    assert 3200 < record["next"] < 6400  # the kill came mid-shard: work kept, work left
    meta = _ranked_sample(p, folder)  # resumes
    one = _ranked_sample(load_profile("smoke", **copy.params, n_sample=6400), copy.data / "sample-one")
    assert meta["files"].keys() == one["files"].keys()
    for name in meta["files"]:
        assert filecmp.cmp(folder / name, copy.data / "sample-one" / name, shallow=False), name
