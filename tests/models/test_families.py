"""Families: layer tables, how outputs are read, where the sweep cuts; the sample is the module's output."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from helpers.models import families, sites
from helpers import models, sampling
from helpers.models.standins import MiniAlexNet, MiniResNet, MiniViT
from tests.conftest import RandomImages

DEMO = {  # the authors' demo page
    "resnet18": ["conv1", *(f"layer{s}.{b}.conv2" for s in range(1, 5) for b in range(2)), "fc"],
    "resnet50": ["conv1", *(f"layer{s}.{b}.conv3" for s, n in zip(range(1, 5), (3, 4, 6, 3)) for b in range(n)),
                 "fc"],
    "vit_b_16": ["conv_proj", *(f"encoder.layers.encoder_layer_{i}.{m}" for i in (0, 3, 7, 11)
                                for m in ("self_attention", "mlp.3")), "heads.head"],
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"],
}


@pytest.mark.parametrize("name", list(DEMO))
def test_built_in_models_default_to_the_demos_layers(name):
    assert list(models.default_layers(name)) == DEMO[name]
    assert models.spec(name).weights == "IMAGENET1K_V1"  # named, never DEFAULT (ResNet-50's is V2)


def test_stand_ins_mirror_the_big_layer_tables():
    assert list(models.default_layers("mini_resnet")) == DEMO["resnet18"]
    assert list(models.default_layers("mini_vit")) == [
        "conv_proj", *(f"encoder.layers.encoder_layer_{i}.{m}" for i in range(4) for m in ("self_attention", "mlp.3")),
        "heads.head"]
    assert families.resolve(MiniAlexNet(), ["conv1", "fc3"]) == {"conv1": "features.0", "fc3": "classifier.6"}


def test_the_family_is_read_off_the_structure_not_the_name():
    names = {type(f).__name__ for f in (
        families.family_of(torchvision.models.vgg11()), families.family_of(torchvision.models.resnext50_32x4d()),
        families.family_of(MiniViT()), families.family_of(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))))}
    assert names == {"AlexNetFamily", "ResNetFamily", "ViTFamily", "Family"}


def _cases():
    torch.manual_seed(0)
    return [
        (MiniAlexNet(), ["conv1", "conv5", "fc1", "fc3"], (1, 28, 28)),
        (MiniResNet(), ["conv1", "layer1.0.conv2", "layer2.0", "layer2.0.downsample.0", "layer3", "fc"], (1, 28, 28)),
        (MiniViT(), ["conv_proj", "encoder.layers.encoder_layer_1.self_attention",
                     "encoder.layers.encoder_layer_2.mlp.3", "encoder.layers.encoder_layer_3", "heads.head"],
         (1, 28, 28)),
        (torchvision.models.resnet18(), ["conv1", "layer4.1.conv2", "layer2", "fc"], (3, 64, 64)),
    ]


@pytest.mark.parametrize("case", range(4), ids=["mini_alexnet", "mini_resnet", "mini_vit", "resnet18"])
def test_prefix_then_suffix_is_the_forward_pass_bit_for_bit(case):
    model, layers, shape = _cases()[case]
    model.eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        full = model(x)
        for layer, path in families.resolve(model, layers).items():
            prefix, suffix, at_cut = sites.split(model, path)
            assert torch.equal(suffix(prefix(x)), full), layer
            if at_cut:  # the prefix ends with the layer's own output
                with sampling.capture(model, sites.sites(model, [layer], x[0])) as out:
                    model(x)
                site = sites.sites(model, [layer], x[0])[layer]
                assert torch.equal(site.read(prefix(x)), out[layer]), layer


def test_cuts_cache_the_input_of_the_block_that_holds_the_layer():
    model = MiniResNet().eval()
    assert sites.split(model, "layer2.0.conv2")[2] is False  # inside layer2.0: its input is cached
    assert sites.split(model, "layer2.0")[2] is True and sites.split(model, "fc")[2] is True
    vit = MiniViT().eval()
    x = torch.randn(2, 1, 28, 28)
    prefix, _, at_cut = sites.split(vit, "encoder.layers.encoder_layer_2.mlp.3")
    assert not at_cut
    with torch.no_grad(), sampling.capture(vit, sites.sites(vit, ["encoder.layers.encoder_layer_1"], x[0]),
                                           pick=lambda n, o: o) as out:
        vit(x)
        cached = prefix(x)  # no_grad, as in the sweep: attention takes the same (fast) path
    # the cached tensor is the output of encoder layer 1, the input of layer 2, class token included
    g = 28 // vit.patch_size
    assert cached.shape == (2, 1 + g * g, vit.hidden_dim)
    assert torch.equal(sites.Site("", "", "tokens", (vit.hidden_dim, g, g), prefix_tokens=1).read(cached),
                       out["encoder.layers.encoder_layer_1"])
    assert sites.split(nn.Sequential(nn.Linear(2, 2)), "0") is None  # undescribed: full forward passes


def _resnet_recompute(model, x, layer):
    """conv2 of layer2.0 before its batch norm, and layer2.0's output, computed by hand."""
    with torch.no_grad():
        h = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))
        block = model.layer2[0]
        if layer == "layer2.0.conv2":
            return block.conv2(block.relu(block.bn1(block.conv1(h))))
        return block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h))))) + block.downsample(h))


def _vit_recompute(model, x, layer):
    """Attention and MLP outputs of encoder layer 1, computed by hand; (B, D, g, g) without the class token."""
    with torch.no_grad():
        t = model._process_input(x)
        t = torch.cat([model.class_token.expand(len(x), -1, -1), t], 1) + model.encoder.pos_embedding
        t = model.encoder.layers[0](t)
        enc = model.encoder.layers[1]
        y = enc.ln_1(t)
        attention = enc.self_attention(y, y, y, need_weights=False)[0]
        out = attention if layer.endswith("self_attention") else enc.mlp(enc.ln_2(attention + t))
        g = 28 // model.patch_size
        return out[:, 1:].transpose(1, 2).reshape(len(x), -1, g, g)


@pytest.mark.parametrize("make,layer,recompute", [
    (MiniResNet, "layer2.0.conv2", _resnet_recompute),
    (MiniResNet, "layer2.0", _resnet_recompute),
    (MiniViT, "encoder.layers.encoder_layer_1.self_attention", _vit_recompute),
    (MiniViT, "encoder.layers.encoder_layer_1.mlp.3", _vit_recompute),
], ids=["pre-bn-conv", "residual-block", "vit-attention", "vit-mlp"])
def test_the_sample_is_the_modules_own_output(make, layer, recompute, tmp_path):
    torch.manual_seed(0)
    model = make().eval()
    data = RandomImages(n=6, shape=(1, 28, 28))
    sampling.sample_activations(model, data, [layer], tmp_path / "s", {}, batch_size=4)
    X, loc = (np.asarray(a) for a in sampling.open_sample(tmp_path / "s", layer))
    full = recompute(model, data.x[loc[:, 0]], layer)
    expect = full[torch.arange(len(loc)), :, loc[:, 1], loc[:, 2]].numpy()
    np.testing.assert_allclose(X, expect, rtol=1e-5, atol=1e-5)
    assert len(set(map(tuple, loc[:, 1:]))) > 1  # positions differ between images


def test_relu_is_found_where_a_relu_module_takes_the_output():
    s = sites.sites(MiniAlexNet().eval(), ["conv1", "fc2", "fc3"], torch.zeros(1, 28, 28))
    assert [s[n].relu for n in ("conv1", "fc2", "fc3")] == [True, True, False]
    r = sites.sites(MiniResNet().eval(), ["layer1.0.conv2", "layer1.0"], torch.zeros(1, 28, 28))
    assert not r["layer1.0.conv2"].relu  # batch norm comes first


def test_token_sites_read_the_patch_grid_and_write_every_token():
    site = sites.Site("t", "t", "tokens", (5, 2, 2), prefix_tokens=1)
    out = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)  # (B, 1 + 4 tokens, D)
    grid = site.read(out)
    assert grid.shape == (2, 5, 2, 2) and torch.equal(grid[1, :, 1, 0], out[1, 3])
    doubled = site.apply((out, None), lambda rows, g, dest: torch.mul(rows, 2, out=dest))
    assert isinstance(doubled, tuple) and torch.equal(doubled[0], out * 2)


def test_unknown_module_path_lists_close_ones():
    with pytest.raises(ValueError, match=r"'encoder.layers.encoder_layer_1.mlp.9' .*closest module paths: "
                                         r"\[.encoder.layers.encoder_layer_1.mlp.4."):
        families.resolve(MiniViT(), ["encoder.layers.encoder_layer_1.mlp.9"])
