"""JPEG folders decoded by PIL in the workers (the default) or by ``decode_jpeg`` on the device."""
import shutil

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from helpers import images, sampling
from helpers.images.batches import Batches

ONE_STEP = 1 / 255 / 0.224  # one uint8 step in units of the smallest ImageNet std


def _batches(root, decode, device="cpu", **kw):
    ds = images.image_folder(root, "val", decode=decode)
    batches = Batches(ds, batch_size=4, device=device, **kw)
    out = [(x.to("cpu"), y, slots) for x, y, slots in batches]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]), torch.cat([o[2] for o in out]), batches


def test_device_decode_on_the_cpu_is_the_pil_path_within_one_uint8_step(tiny_imagenet):
    x_pil, y_pil, slots_pil, _ = _batches(tiny_imagenet, "pil")
    x_dev, y_dev, slots_dev, _ = _batches(tiny_imagenet, "device")
    assert x_dev.dtype == torch.float32 and x_dev.shape == x_pil.shape == (6, 3, 224, 224)
    assert torch.equal(y_dev, y_pil) and torch.equal(slots_dev, slots_pil)
    delta = (x_dev - x_pil).abs()
    assert delta.max() <= ONE_STEP * 1.001 and delta.mean() < 0.01 * ONE_STEP, (delta.max(), delta.mean())


def test_the_decode_mode_is_part_of_the_datasets_identity(tiny_imagenet):
    pil = images.image_folder(tiny_imagenet, "val").identity()
    dev = images.image_folder(tiny_imagenet, "val", decode="device").identity()
    assert "decode" not in pil and dev["decode"] == "device"
    assert {k: v for k, v in dev.items() if k != "decode"} == pil
    with pytest.raises(ValueError, match="decode='nvjpeg' is unknown; use 'pil' or 'device'"):
        images.image_folder(tiny_imagenet, "val", decode="nvjpeg")


def test_a_png_named_jpeg_is_decoded_as_pil_decodes_it(tmp_path, tiny_imagenet):
    root = tmp_path / "imagenet"
    shutil.copytree(tiny_imagenet, root)
    victim = sorted((root / "val").rglob("*.JPEG"))[2]
    Image.open(victim).convert("RGB").save(victim, format="PNG")  # lossless: both decoders see the same pixels
    x_pil, _, _, _ = _batches(root, "pil")
    x_dev, _, _, _ = _batches(root, "device")
    assert (x_dev[2] - x_pil[2]).abs().max() <= ONE_STEP * 1.001  # PIL's resampling against torch's


def test_a_truncated_jpeg_is_named_or_skipped_as_with_pil(broken_imagenet, tmp_path):
    root, victim = broken_imagenet
    with pytest.raises(images.BadImageError, match=rf"image 1 \({victim}\) cannot be read .*skip_bad_images=True"):
        _batches(root, "device")
    x, _, slots, batches = _batches(root, "device", skip_bad=True)
    assert slots.tolist() == [0, 2, 3, 4, 5] and len(x) == 5
    assert [(b["slot"], b["index"], b["path"]) for b in batches.bad] == [(1, 1, str(victim))]
    assert batches.next_slot == 6
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    ds = {d: images.image_folder(root, "val", decode=d) for d in ("pil", "device")}
    meta = {d: sampling.sample_activations(net, ds[d], ["conv1"], tmp_path / d, {}, batch_size=4, skip_bad=True)
            for d in ds}
    assert [b["path"] for b in meta["device"]["bad_images"]] == [str(victim)]
    X = {d: np.asarray(sampling.open_sample(tmp_path / d, "conv1")[0]) for d in ds}
    locs = {d: np.asarray(sampling.open_sample(tmp_path / d, "conv1")[1]) for d in ds}
    np.testing.assert_array_equal(locs["device"], locs["pil"])
    assert np.abs(X["device"] - X["pil"]).max() <= 0.01 * np.abs(X["pil"]).max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: decode_jpeg on the GPU (nvJPEG)")
def test_gpu_decode_is_close_to_pil(tiny_imagenet):
    x_pil, _, _, _ = _batches(tiny_imagenet, "pil")
    ds = images.image_folder(tiny_imagenet, "val", decode="device")
    got = [x for x, _, _ in Batches(ds, batch_size=4, device="cuda")]
    assert all(x.device.type == "cuda" for x in got)
    delta = (torch.cat(got).cpu() - x_pil).abs()
    assert delta.mean() <= 0.01 and delta.max() <= 0.25, (delta.mean(), delta.max())
