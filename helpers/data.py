"""Datasets behind one interface: Fashion-MNIST (offline) and ImageNet or any ImageFolder.

Every dataset returned here yields ``(image_tensor, label)`` pairs ready for the
model, and has ``display(i)``: the same image as a ``uint8`` array of shape
``(H, W, C)``, cropped as the model sees it but not normalised, for patches;
``describe(i)``: where image ``i`` comes from (its file); ``identity()``: what
the dataset is, cheaply (content digest, or root, classes and file list), for
the provenance of every artifact made from it; and ``input_shape``.

An image that cannot be read raises :class:`BadImageError` naming its path and
index; :class:`helpers.batches.Batches` feeds a model and can skip such images
instead, listing them (``skip_bad_images``).
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

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


class BadImageError(OSError):
    """An image of the dataset cannot be read or decoded."""


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


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


def check_split(profile: Profile, split: str, name: str = "eval_split") -> None:
    """Refuse a split the dataset lacks, before any work, suggesting the ones it has.

    Raises
    ------
    FileNotFoundError
        For a folder dataset without ``<data_root>/<split>``.
    ValueError
        When ``data_root`` is not set for a folder dataset.
    """
    if profile.dataset == "fashion_mnist":
        return  # its splits are checked with the profile (config.validate)
    if profile.data_root is None:
        image_folder(None, split)
    root = Path(profile.data_root).expanduser()
    if not root.is_dir():
        image_folder(root, split)
    if not (root / split).is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = f" Use {name}={found[0]!r} (e.g. -p {name}={found[0]})." if len(found) == 1 else (
            f" Use one of them, e.g. -p {name}=val." if "val" in found else "")
        raise FileNotFoundError(
            f"setting {name}={split!r}: {root / split} does not exist; {root} has the splits {found}.{hint}")


_CACHE: dict = {}


def load_dataset(profile: Profile, split: str):
    """The profile's dataset for one split (``profile.sample_split`` or ``eval_split``).

    Loaded once per process and kept while its files are unchanged.
    """
    stamp = _stamp(profile, split)
    which = (profile.dataset, profile.data_root, split, None if profile.dataset == "fashion_mnist" else profile.model)
    cached = _CACHE.get(which)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    ds = _load_dataset(profile, split)
    _CACHE[which] = (stamp, ds)
    return ds


def _stamp(profile: Profile, split: str):
    """Modification times that change when the split's files do (None: no caching)."""
    if profile.dataset == "fashion_mnist":
        return None
    folder = Path(profile.data_root or ".").expanduser() / split
    try:
        return tuple((d.name, d.stat().st_mtime_ns) for d in sorted(folder.iterdir()) if d.is_dir())
    except OSError:
        return None


def _load_dataset(profile: Profile, split: str):
    if profile.dataset == "fashion_mnist":
        dirs = None
        if profile.data_root:
            dirs = (Path(profile.data_root), FASHION_SYSTEM_DIR, FASHION_LOCAL_DIR)
        return fashion_mnist(split, dirs)
    if profile.dataset in ("imagenet", "imagefolder"):
        from .models import preprocessing  # the model's own preprocessing

        ds = image_folder(profile.data_root, split, preset=preprocessing(profile.model))
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


def images_key(dataset, indices=None) -> dict:
    """Which images: the dataset's identity, how many, and a digest of their indices."""
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    identity = dataset.identity() if hasattr(dataset, "identity") else {"kind": type(dataset).__name__,
                                                                         "n": len(dataset)}
    return {"dataset": identity, "n": int(len(indices)), "indices": _digest(indices.astype(np.int64).tobytes())}


def example(dataset, indices=None) -> torch.Tensor:
    """An input of the dataset's shape (zeros when the shape is known: no image is read)."""
    shape = getattr(dataset, "input_shape", None)
    if shape is not None:
        return torch.zeros(shape)
    first = 0 if indices is None or len(indices) == 0 else int(np.asarray(indices)[0])
    return dataset[first][0]
