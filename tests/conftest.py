"""Shared fixtures: tiny data that exercise the real loading code."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

WNIDS = ("n01440764", "n01443537", "n01484850")


class RandomImages(Dataset):
    """Seeded random images with labels, counting how many items were read."""

    def __init__(self, n=10, shape=(3, 224, 224), seed=0, fail_at=None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn((n, *shape), generator=g)
        self.fail_at, self.reads = fail_at, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            raise KeyboardInterrupt(f"simulated interruption at image {i}")
        self.reads += 1
        return self.x[i], i % 3


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory):
    """An ImageNet-layout folder of JPEGs: train/ and val/, three WordNet-id classes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(180, 320, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture
def alexnet_cache(tmp_path, monkeypatch):
    """Random AlexNet weights placed where torchvision's weights mechanism looks for them."""
    import torchvision
    from torchvision.models import AlexNet_Weights

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.save(state, path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return state
