import numpy as np
import pytest
import torch
import torchvision

ALEXNET = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3")

from torch import nn

from helpers.models.receptive import Field, chain_field, crop, receptive_fields
from helpers.models.sites import sites
from helpers.models.standins import MiniAlexNet


def test_alexnet_fields_match_the_published_values():
    f = receptive_fields(torchvision.models.alexnet(), ALEXNET, torch.zeros(3, 224, 224))
    assert [f[f"conv{i}"].size for i in range(1, 6)] == [11, 51, 99, 131, 163]
    assert [f[f"conv{i}"].stride for i in range(1, 6)] == [4, 8, 16, 16, 16]
    assert f["fc1"] is None and f["fc3"] is None


def test_mini_alexnet_fields_by_hand():
    # conv1 k5 s1 p2 -> 5 px; pool k3 s2 p1 -> 7, stride 2; conv2 k3 -> 11; pool -> 15, stride 4;
    # conv3, conv4, conv5 k3 -> 23, 31, 39. Offsets: -2, -5, -11, -15, -19.
    f = receptive_fields(MiniAlexNet(), ALEXNET, torch.zeros(1, 28, 28))
    assert [(f[f"conv{i}"].size, f[f"conv{i}"].stride, f[f"conv{i}"].offset) for i in range(1, 6)] == [
        (5, 1, -2), (11, 2, -5), (23, 4, -11), (31, 4, -15), (39, 4, -19)]


def test_field_matches_the_gradient_support():
    """Independent check: the input pixels whose gradient reaches one conv2 unit."""
    torch.manual_seed(0)
    model = MiniAlexNet().eval()
    x = torch.randn(1, 1, 28, 28, requires_grad=True)
    out = model.features[:4](x)  # conv2, pre-ReLU
    y, xx = 5, 9
    out[0, :, y, xx].sum().backward()
    rows, cols = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
    top, left, size = receptive_fields(model, ["conv2"], torch.zeros(1, 28, 28))["conv2"].box(y, xx)
    assert rows.min() >= top and rows.max() < top + size and cols.min() >= left and cols.max() < left + size
    assert rows.max() - rows.min() + 1 == size  # interior unit: the whole field is used


def _marker_image(h=40, w=40, at=(20, 30)):
    image = np.zeros((h, w, 1), np.uint8)
    image[at] = 255
    return image


def test_crop_contains_the_marker_iff_the_field_covers_it():
    image = _marker_image()
    field = Field(size=7, stride=4, offset=-3)
    covering = crop(image, field.box(5, 8), 7)  # rows 17..23, cols 29..35 hold (20, 30)
    assert covering.max() == 255 and covering[3, 1, 0] == 255
    elsewhere = crop(image, field.box(1, 1), 7)
    assert elsewhere.max() == 0


def test_edge_positions_are_padded_not_shifted():
    image = np.full((10, 10, 1), 200, np.uint8)
    image[0, 0] = 50
    patch = crop(image, (-3, -3, 7), 7, fill=0)
    assert (patch[:3] == 0).all() and (patch[:, :3] == 0).all()  # padding where the box leaves the image
    assert patch[3, 3, 0] == 50  # image pixel (0, 0) stays at its place in the box
    assert (patch[4:, 4:] == 200).all()


def test_crop_returns_one_thumbnail_size():
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert crop(image, (10, 10, 163), 64).shape == (64, 64, 3)
    assert crop(image, (10, 10, 11), 64).shape == (64, 64, 3)
    assert crop(image, None, 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="non-square"):
        from helpers.models.receptive import _pair
        _pair((3, 5))


def test_resnet18_layer4_field_matches_the_published_value():
    """Every path of the graph: the 1x1 stride-2 downsample branch is not one more stride."""
    model = torchvision.models.resnet18()
    f = receptive_fields(model, ["conv1", "layer4.1.conv2", "layer4", "fc"], torch.zeros(3, 224, 224))
    assert (f["layer4.1.conv2"].size, f["layer4.1.conv2"].stride) == (435, 32)
    assert f["layer4"] == f["layer4.1.conv2"]  # the block's last add and ReLU widen nothing
    assert (f["conv1"].size, f["conv1"].stride, f["conv1"].offset) == (7, 2, -3) and f["fc"] is None


def _linear_positive_copy(model):
    """Positive weights, no ReLU, average pooling: every path's gradient reaches every pixel of its box."""
    import copy

    m = copy.deepcopy(model).eval()
    for name, child in list(m.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.ReLU):
                setattr(child, attr, nn.Identity())
            elif isinstance(sub, nn.MaxPool2d):
                setattr(child, attr, nn.AvgPool2d(sub.kernel_size, sub.stride, sub.padding))
    with torch.no_grad():
        for p in m.parameters():
            p.abs_().add_(0.01)
    return m


@pytest.mark.parametrize("layer", ["conv1", "layer1.1.conv2", "layer2.0.conv1", "layer2.0", "layer3.1.conv2",
                                   "layer4.0.downsample.0", "layer4"])
def test_residual_fields_equal_the_gradient_support_of_one_position(layer):
    from helpers.models.standins import MiniResNet

    torch.manual_seed(0)
    model = _linear_positive_copy(MiniResNet())
    size = 256
    field = receptive_fields(model, [layer], torch.zeros(1, size, size))[layer]
    site = sites(model, [layer], torch.zeros(1, size, size))[layer]
    y = x = site.shape[1] // 2
    top, left, side = field.box(y, x)
    assert top >= 0 and top + side <= size, "the box must lie inside the image for an exact comparison"
    image = torch.randn(1, 1, size, size, requires_grad=True)
    got = {}
    handle = model.get_submodule(site.path).register_forward_hook(lambda m, a, o: got.setdefault("out", o))
    try:
        model(image)
    finally:
        handle.remove()
    got["out"][0, :, y, x].sum().backward()
    rows, cols = np.nonzero(image.grad[0, 0].abs().numpy() > 0)
    assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (top, left, top + side, left + side)


def test_vit_tokens_show_their_patch_with_the_margin_and_the_head_the_whole_image():
    from helpers.models.standins import MiniViT

    model = MiniViT().eval()
    layers = ["conv_proj", "encoder.layers.encoder_layer_1.mlp.3", "heads.head"]
    p = model.patch_size  # 7: a 4 x 4 grid of patches
    f = receptive_fields(model, layers, torch.zeros(1, 28, 28), margin=1)
    assert f["conv_proj"] == Field(p, p, 0)  # the patch embedding: exactly its patch
    assert f["encoder.layers.encoder_layer_1.mlp.3"] == Field(3 * p, p, -p) and f["heads.head"] is None
    assert receptive_fields(model, layers[1:2], torch.zeros(1, 28, 28), margin=0)[layers[1]] == Field(p, p, 0)


class _Untraceable(nn.Module):
    """A conv chain whose forward branches on the data: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, stride=2)

    def forward(self, x):
        if x.sum() > -1e9:
            x = self.a(x)
        return self.b(x)


def test_an_untraceable_model_gets_the_gradient_estimate():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    f = receptive_fields(model, ["b"], torch.zeros(1, 32, 32))["b"]
    assert f == chain_field([model.a, model.b])  # 5 px, stride 2, offset -1


def test_a_field_wider_than_the_image_shows_the_image_around_the_centre():
    image = np.arange(10 * 10, dtype=np.uint8).reshape(10, 10, 1)
    patch = crop(image, (-20, -18, 50), 10)  # centre (5, 7): the box's middle
    assert patch.shape == (10, 10, 1)
    assert patch[0, 0, 0] == image[0, 2, 0] and (patch[:, -2:] == 0).all()  # shifted by 2 columns, padded
