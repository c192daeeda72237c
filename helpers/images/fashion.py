"""Fashion-MNIST, offline: Debian's ``dataset-fashion-mnist`` files (or any folder of its IDX files), read
once into memory; torchvision's download is the fallback.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..pipeline.settings import ROOT
from .common import _digest

log = logging.getLogger(__name__)


FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


FASHION_LOCAL_DIR = ROOT / "data" / "raw"


FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file; delete it and fetch it again.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated ({array.size} bytes for shape {shape}); fetch it again.")
    return array.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz",
                      folder / "FashionMNIST" / "raw" / stem,
                      folder / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def find_fashion_mnist(dirs=None, download: bool = True) -> Path:
    """Locate the Fashion-MNIST IDX files.

    Looks in ``dirs`` (default: Debian's ``/usr/share/datasets/fashion-mnist``,
    then ``data/raw/``), then tries torchvision's download into the last folder.

    Raises
    ------
    FileNotFoundError
        Naming the three ways to provide the dataset.
    """
    dirs = [Path(d) for d in (dirs or (FASHION_SYSTEM_DIR, FASHION_LOCAL_DIR))]
    stems = [s for pair in FASHION_FILES.values() for s in pair]
    for folder in dirs:
        if all(_find_idx(folder, s) for s in stems):
            return folder
    error = "download disabled"
    if download:
        try:
            import torchvision

            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(dirs[-1]), train=train, download=True)
            return dirs[-1]
        except Exception as e:  # no network, proxy, disk full: all end the same way
            error = f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"
    raise FileNotFoundError(
        "Fashion-MNIST not found. Provide it one of three ways: "
        f"(1) `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files in {dirs[0]}), "
        f"(2) put the four IDX files ({', '.join(stems)}, optionally .gz) in {dirs[-1]}/, "
        f"(3) allow torchvision to download them (tried: {error})."
    )


class ArrayImages(Dataset):
    """Images held in memory as ``uint8`` arrays.

    Parameters
    ----------
    images : ndarray of shape (n, H, W) or (n, H, W, C), uint8
    labels : ndarray of shape (n,)
    mean, std : float
        Normalisation applied in ``__getitem__``.
    classes : sequence of str
    """

    def __init__(self, images, labels, mean, std, classes, name: str = "arrays"):
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.mean, self.std, self.classes, self.name = mean, std, tuple(classes), name
        self.input_shape = (1, *images.shape[1:]) if images.ndim == 3 else (images.shape[3], *images.shape[1:3])
        self._identity = None

    def identity(self) -> dict:
        """``{"kind", "n", "sha256"}``: a digest of the pixels and labels (computed once)."""
        if self._identity is None:
            self._identity = {"kind": self.name, "n": len(self),
                              "sha256": _digest(np.ascontiguousarray(self.images).tobytes(),
                                                self.labels.numpy().tobytes())}
        return self._identity

    def describe(self, i) -> str:
        return f"{self.name} image {i}"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32) / 255.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        return (x - self.mean) / self.std, self.labels[i]

    def display(self, i) -> np.ndarray:
        """Image ``i`` as shown to the model, ``uint8`` of shape (H, W, C)."""
        im = self.images[i]
        return im[..., None] if im.ndim == 2 else im


def fashion_mnist(split: str = "train", dirs=None, download: bool = True) -> ArrayImages:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) images, 1 x 28 x 28."""
    if split not in FASHION_FILES:
        raise ValueError(f"split={split!r} is not a Fashion-MNIST split; use 'train' or 'test'.")
    folder = find_fashion_mnist(dirs, download)
    images, labels = (read_idx(_find_idx(folder, s)) for s in FASHION_FILES[split])
    return ArrayImages(images, labels, FASHION_MEAN, FASHION_STD, FASHION_CLASSES, name=f"fashion_mnist/{split}")
