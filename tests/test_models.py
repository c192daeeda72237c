import pytest
import torch

from helpers import data, models, sampling
from helpers.config import load_profile
from helpers.standins import MiniAlexNet


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


@pytest.mark.parametrize("model,target", [("mini_alexnet", 0.85), ("mini_resnet", 0.85), ("mini_vit", 0.83)])
def test_quick_stand_ins_reach_their_accuracy_and_their_sidecars_are_true(model, target):
    """Trains the quick profile's stand-in if it is not cached yet (about 2 minutes each on 2 cores)."""
    p = load_profile("quick", model=model)
    net, info = models.load_model(p, device="cpu")
    test = data.load_dataset(p, "test")
    acc = models.evaluate(net, test, device="cpu")
    # the sidecar's accuracy was measured in the pinned training process; this process may pick
    # other CPU kernels, which can flip a near-tie: at most a couple of the 10,000 images
    assert acc == pytest.approx(info["test_accuracy"], abs=2e-4)
    assert acc >= target


def test_corrupt_checkpoint_says_how_to_fix(tmp_path):
    p = load_profile("smoke", data_dir=str(tmp_path))
    models.load_model(p, device="cpu")
    (p.artifact("model") / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"model.pt is corrupt.*delete .*model and rerun 01_sample"):
        models.load_model(p, device="cpu", train=False)  # as 03 and 05 load it
    models.load_model(p, device="cpu")  # 01 makes it again
    models.load_model(p, device="cpu", train=False)


def test_a_model_that_cannot_take_the_images_is_refused_up_front():
    with pytest.raises(ValueError, match=r"model='mini_alexnet' takes 1-channel 28 x 28 images .*dataset="
                                         r"'imagefolder' gives 3-channel images; use one of \['alexnet', 'resnet18'"):
        models.check(load_profile("smoke", dataset="imagefolder"))
    with pytest.raises(ValueError, match=r"model='alexnet' takes RGB .*use one of \['mini_alexnet', 'mini_resnet', 'mini_vit'\]"):
        models.check(load_profile("smoke", model="alexnet"))
