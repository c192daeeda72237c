import json

import pytest
import torch

from helpers import models, sampling
from helpers.models.standins import MiniAlexNet
from helpers.pipeline.settings import load_profile


def test_mini_alexnet_has_the_paper_layer_names_and_documented_shapes():
    shapes = sampling.layer_shapes(MiniAlexNet().eval(), torch.zeros(1, 28, 28), models.default_layers("mini_alexnet"))
    assert shapes == {"conv1": (24, 28, 28), "conv2": (48, 14, 14), "conv3": (64, 7, 7),
                      "conv4": (48, 7, 7), "conv5": (48, 7, 7), "fc1": (256,), "fc2": (256,), "fc3": (10,)}


def test_unknown_layer_is_an_error_listing_close_module_paths():
    with pytest.raises(ValueError, match=r"layer 'conv6' is not a module of MiniAlexNet; closest module paths: "
                                         r"\['conv5', 'conv4'.*default layers are \['conv1'"):
        models.check(load_profile("smoke", layers="conv1,conv6"))
    with pytest.raises(ValueError, match=r"'layer4.1.conv9' .*closest module paths: \['layer4.1.conv2', "
                                         r"'layer4.1.conv1'"):
        models.check(load_profile("smoke", model="mini_resnet", layers="layer4.1.conv9"))


def test_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="model='vgg' is unknown; use a built-in one of .*'torchvision:<name>"):
        load_profile("smoke", model="vgg")
    with pytest.raises(ValueError, match=r"torchvision has no classifier 'resnet19'; close: \['resnet18'"):
        load_profile("smoke", model="torchvision:resnet19")
    with pytest.raises(ValueError, match=r"resnet18 has no weights 'V9'; it has \['IMAGENET1K_V1'\]"):
        models.spec("torchvision:resnet18:V9")


@pytest.mark.parametrize("name, expect", [
    ("mini_alexnet:untrainde", "model='mini_alexnet:untrainde': mini_alexnet is a built-in, whose only suffix is "
                               "':untrained'; did you mean 'mini_alexnet:untrained' (its untrained control)?"),
    ("alexnet:IMAGENET1K_V2", "did you mean 'alexnet:untrained' (its untrained control), or "
                              "'torchvision:alexnet:IMAGENET1K_V2' for other weights of torchvision's?"),
    ("mini_alexnett", "model='mini_alexnett' is unknown (close: 'mini_alexnet'"),
    ("vit_b16:untrained", "(close: 'vit_b_16:untrained'"),
])
def test_a_misspelt_model_gets_close_names(name, expect):
    with pytest.raises(ValueError) as e:
        models.spec(name)
    assert expect in str(e.value)
    assert "cannot import" not in str(e.value)  # never read as <module>:<callable>


def test_weights_not_cached_are_a_need_that_downloads_them(tmp_path, monkeypatch, alexnet_cache):
    from helpers.models.loading import weights_needs

    assert weights_needs("alexnet") == [] and weights_needs("mini_alexnet") == []
    assert weights_needs("alexnet:untrained") == [] and weights_needs("torchvision:resnet18:none") == []
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    (need,) = weights_needs("alexnet")
    assert need.what == "alexnet's weights IMAGENET1K_V1" and "alexnet-owt-7be5be79.pth" in need.why
    assert need.download == 233_087_000 and need.fetch is not None and "TORCH_HOME" in need.fix
    fetched = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, *a, **k: fetched.append(url)
                        or torch.save(alexnet_cache, dst))
    need.fetch()  # torchvision's own mechanism, into torch's cache
    assert fetched == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]
    assert weights_needs("alexnet") == []


def test_a_device_torch_cannot_see_is_refused_naming_the_profile(monkeypatch):
    from helpers.models.running import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"setting device='cuda' \(profile paper\): torch .* sees no CUDA device "
                                         r"here; use -p device=cpu"):
        check_device(load_profile("paper", device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device(load_profile("paper", device="cuda:0"))
    with pytest.raises(ValueError, match=r"torch sees 1 CUDA device\(s\), cuda:0 to cuda:0"):
        check_device(load_profile("paper", device="cuda:1"))
    check_device(load_profile("smoke", device="cpu"))
    check_device(load_profile("smoke"))


def test_alexnet_loads_through_torchvision_weights_cache(alexnet_cache):
    model, info = models.load_torchvision(models.spec("alexnet"))
    assert info["id"] == "torchvision:AlexNet_Weights.IMAGENET1K_V1"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, alexnet_cache[k])


def test_missing_alexnet_weights_name_the_cache(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match=r"not in torch's cache .*alexnet-owt-7be5be79.pth.*TORCH_HOME"):
        models.load_torchvision(models.spec("alexnet"))


def test_smoke_trains_its_stand_in_and_says_how_it_compares(tmp_path):
    p = load_profile("smoke", data_dir=str(tmp_path))
    _, info = models.load_model(p, device="cpu")
    meta = json.loads((p.artifact("model") / "meta.json").read_text())
    assert info["id"] == f"sha256:{meta['files']['model.pt']['sha256']}" and info["weights"] == "trained here"
    assert meta["compared"].startswith("trained with another recipe than the shipped mini_alexnet weights: epochs 1")
    assert meta["test_images"] == 192 and meta["test_correct"] == round(meta["test_accuracy"] * 192)


@pytest.mark.parametrize("factory,why", [
    ("os:system", r"calling system\(\) failed \(TypeError"),
    ("os:sep", r"sep is a str, not a model factory"),
    ("builtins:dict", r"dict\(\) returned dict, not a torch.nn.Module"),
])
def test_a_callable_that_is_no_model_factory_is_refused(factory, why):
    with pytest.raises(ValueError, match=rf"model='{factory}': {why}.*a factory takes no arguments and returns "
                                         r"a torch.nn.Module, or a tuple \(module, preprocessing\)"):
        load_profile("paper", model=factory)
    from helpers.run import main

    assert main(["--profile", "paper", "-p", f"model={factory}", "--only", "01"]) == 1  # refused, no traceback


def test_corrupt_checkpoint_says_how_to_fix(tmp_path):
    p = load_profile("smoke", data_dir=str(tmp_path), train_limit=128)  # what is trained does not matter here
    models.load_model(p, device="cpu")
    (p.artifact("model") / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"model.pt is corrupt.*delete .*model/[0-9a-f]+ and rerun 01_sample"):
        models.load_model(p, device="cpu", train=False)  # as 03 and 05 load it
    models.load_model(p, device="cpu")  # 01 makes it again
    models.load_model(p, device="cpu", train=False)


def test_a_model_that_cannot_take_the_images_is_refused_up_front():
    with pytest.raises(ValueError, match=r"model='mini_alexnet' takes 1-channel 28 x 28 images .*dataset="
                                         r"'imagefolder' gives 3-channel images; use one of \['alexnet', 'resnet18'"):
        models.check(load_profile("smoke", dataset="imagefolder"))
    with pytest.raises(ValueError, match=r"model='alexnet' takes RGB .*use one of \['mini_alexnet', 'mini_resnet', 'mini_vit'\]"):
        models.check(load_profile("smoke", model="alexnet"))
