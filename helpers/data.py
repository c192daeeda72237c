"""Datasets behind one interface: Fashion-MNIST (offline) and ImageNet or any ImageFolder.

Every dataset returned here yields ``(image_tensor, label)`` pairs ready for the
model, and has ``display(i)``: the same image as a ``uint8`` array of shape
``(H, W, C)``, cropped as the model sees it but not normalised, for patches.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .config import ROOT, Profile

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

    def __init__(self, images, labels, mean, std, classes):
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.mean, self.std, self.classes = mean, std, tuple(classes)

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
    return ArrayImages(images, labels, FASHION_MEAN, FASHION_STD, FASHION_CLASSES)


class FolderImages(Dataset):
    """An ImageFolder with ImageNet's standard preprocessing and a ``display``."""

    def __init__(self, folder):
        import torchvision
        from torchvision.models import AlexNet_Weights
        from torchvision.transforms import v2

        self.transform = AlexNet_Weights.IMAGENET1K_V1.transforms()
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
        self.classes = tuple(self.folder.classes)

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        image, label = self.folder[i]
        return self.transform(image), label

    def display(self, i) -> np.ndarray:
        """Image ``i`` resized and centre-cropped as the model sees it, ``uint8`` (H, W, 3)."""
        image, _ = self.folder[i]
        return np.asarray(self.crop(image.convert("RGB")))


def image_folder(root, split: str, name: str = "data_root") -> FolderImages:
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
    return FolderImages(folder)


def load_dataset(profile: Profile, split: str):
    """The profile's dataset for one split (``profile.sample_split`` or ``eval_split``)."""
    if profile.dataset == "fashion_mnist":
        dirs = None
        if profile.data_root:
            dirs = (Path(profile.data_root), FASHION_SYSTEM_DIR, FASHION_LOCAL_DIR)
        return fashion_mnist(split, dirs)
    if profile.dataset in ("imagenet", "imagefolder"):
        ds = image_folder(profile.data_root, split)
        if profile.dataset == "imagenet" and len(ds.classes) != 1000:
            log.warning("%s has %d classes, not ImageNet's 1000: accuracies will not be ImageNet's.",
                        profile.data_root, len(ds.classes))
        return ds
    raise ValueError(
        f"dataset={profile.dataset!r} is unknown; use 'fashion_mnist', 'imagenet' or 'imagefolder'."
    )


def select(n_total: int, n: int | None, seed: int) -> np.ndarray:
    """Indices of the images to use: all of them, or a seeded sorted subset of ``n``."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n <= 0:
        raise ValueError(f"n={n} images requested; give a positive number or None for all.")
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(n_total, size=n, replace=False))


def loader(dataset, indices=None, batch_size: int = 256, num_workers: int = 0, device=None) -> DataLoader:
    """Batches of ``dataset`` (or of the images ``indices``) in order, pinned when bound for CUDA."""
    data = dataset if indices is None else Subset(dataset, np.asarray(indices).tolist())
    return DataLoader(data, batch_size=batch_size, num_workers=num_workers,
                      pin_memory=torch.device(device or "cpu").type == "cuda")
