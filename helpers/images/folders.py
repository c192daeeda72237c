"""ImageNet or any ImageFolder: images read from disk as the model expects them (its preprocessing
preset), with their provenance (root, classes, file list).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .common import BadImageError, _digest


class FolderImages(Dataset):
    """An ImageFolder with a model's preprocessing (default: ImageNet's standard one) and a ``display``.

    ``preset`` is a torchvision ``ImageClassification``-like transform with
    ``resize_size`` and ``crop_size`` (e.g. ``weights.transforms()``).
    """

    def __init__(self, folder, preset=None):
        import torchvision
        from torchvision.models import AlexNet_Weights
        from torchvision.transforms import v2

        self.transform = preset or AlexNet_Weights.IMAGENET1K_V1.transforms()
        self.crop = v2.Compose([
            v2.Resize(self.transform.resize_size, antialias=True),
            v2.CenterCrop(self.transform.crop_size),
        ])
        try:
            self.folder = torchvision.datasets.ImageFolder(str(folder))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{folder} has no class folders with images ({e}); expected "
                f"{folder}/<class>/<image>.JPEG, one folder per class."
            ) from None
        self.root = Path(folder).resolve()
        self.classes = tuple(self.folder.classes)
        crop = list(self.transform.crop_size)  # [224] or [h, w]
        self.input_shape = (3, crop[0], crop[-1])
        self._identity = None

    def __len__(self):
        return len(self.folder)

    def identity(self) -> dict:
        """``{"kind", "root", "classes", "files", ...}``: the folder, its class list and file list (cheap)."""
        if self._identity is None:
            paths = [str(Path(p).relative_to(self.root)) for p, _ in self.folder.samples]
            self._identity = {"kind": "imagefolder", "root": str(self.root), "classes": len(self.classes),
                              "classes_sha256": _digest(*self.classes), "files": len(paths),
                              "files_sha256": _digest(*paths),
                              "preprocessing": " ".join(repr(self.transform).split())}
        return self._identity

    def describe(self, i) -> str:
        return self.folder.samples[i][0]

    def _load(self, i):
        try:
            return self.folder[i]
        except Exception as e:  # truncated, not an image, unreadable: all name the file
            raise BadImageError(
                f"image {i} ({self.describe(i)}) cannot be read ({type(e).__name__}: {e}); replace or "
                "delete it, or set skip_bad_images=True to skip unreadable images (the artifacts "
                "list them).") from e

    def __getitem__(self, i):
        image, label = self._load(i)
        return self.transform(image), label

    def display(self, i) -> np.ndarray:
        """Image ``i`` resized and centre-cropped as the model sees it, ``uint8`` (H, W, 3)."""
        image, _ = self._load(i)
        return np.asarray(self.crop(image.convert("RGB")))


def image_folder(root, split: str, name: str = "data_root", preset=None) -> FolderImages:
    """``<root>/<split>/<class>/<image>`` with the standard ImageNet preprocessing.

    ImageFolder sorts class folders by name, so ImageNet's WordNet-id folders
    get torchvision's class indices.

    Raises
    ------
    ValueError
        When ``root`` is not given.
    FileNotFoundError
        When ``root`` or ``root/split`` is missing or holds no class folders.
    """
    if root is None:
        raise ValueError(
            f"{name} is not set; give the ImageNet folder, e.g. "
            "`make paper IMAGENET=/path/to/imagenet` or load_profile('paper', data_root=...)."
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}={str(root)!r} does not exist; give the folder holding train/ and val/.")
    folder = root / split
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"{folder} does not exist (found folders {found}); expected {root}/{split}/<class>/<image>.JPEG. "
            "ImageNet's val images must be sorted into class folders, as torchvision.datasets.ImageNet does."
        )
    return FolderImages(folder, preset)


CHANNELS = {"fashion_mnist": 1, "imagenet": 3, "imagefolder": 3}
"""Image channels of each dataset kind."""
