import numpy as np
import pytest
import torch
import torchvision

from helpers.models import LAYER_TABLE, MiniAlexNet
from helpers.receptive import Field, crop, receptive_fields


def test_alexnet_fields_match_the_published_values():
    f = receptive_fields(torchvision.models.alexnet(), LAYER_TABLE, torch.zeros(3, 224, 224))
    assert [f[f"conv{i}"].size for i in range(1, 6)] == [11, 51, 99, 131, 163]
    assert [f[f"conv{i}"].stride for i in range(1, 6)] == [4, 8, 16, 16, 16]
    assert f["fc1"] is None and f["fc3"] is None


def test_mini_alexnet_fields_by_hand():
    # conv1 k5 s1 p2 -> 5 px; pool k3 s2 p1 -> 7, stride 2; conv2 k3 -> 11; pool -> 15, stride 4;
    # conv3, conv4, conv5 k3 -> 23, 31, 39. Offsets: -2, -5, -11, -15, -19.
    f = receptive_fields(MiniAlexNet(), LAYER_TABLE, torch.zeros(1, 28, 28))
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
        from helpers.receptive import _pair
        _pair((3, 5))
