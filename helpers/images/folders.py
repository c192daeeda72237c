"""ImageNet or any ImageFolder: images read from disk as the model expects them (its preprocessing
preset), with their provenance (root, classes, file list).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import BadImageError, _digest


class FolderImages(Dataset):
    """An ImageFolder with a model's preprocessing (default: ImageNet's standard one) and a ``display``.

    ``preset`` is a torchvision ``ImageClassification``-like transform with
    ``resize_size`` and ``crop_size`` (e.g. ``weights.transforms()``).

    ``decode="pil"`` (the default): item ``i`` is the preprocessed image, made
    by PIL and the preset in the loader workers. ``decode="device"``: item
    ``i`` is the file's bytes (``uint8`` tensor) and :meth:`finish` decodes a
    batch of them with ``torchvision.io.decode_jpeg`` on the run's device
    (nvJPEG, batched, on CUDA; libjpeg-turbo on the CPU), then resizes,
    crops and normalises there as the preset does; :class:`~.batches.Batches`
    calls it. A file ``decode_jpeg`` refuses (a PNG named ``.JPEG``, say) is
    decoded by ``torchvision.io.decode_image`` on the CPU; one neither reads
    is a :class:`BadImageError`, as with PIL.

    The two modes agree closely but not exactly (another JPEG decoder; torch's
    resampling of the decoded tensor where the preset resizes a PIL image): on 32
    synthetic 500x375 JPEGs (PIL, quality 90, smooth random content) decoded on
    the CPU, the normalised pixels differ by at most 0.0175 (one uint8 step,
    in units of the ImageNet std; mean 2e-5), and AlexNet's first conv
    (``weights=None``, seed 0) by at most 0.16 % of its largest activation.
    On CUDA, nvJPEG's IDCT and chroma upsampling may differ more; the CUDA
    test bounds the normalised pixels' mean |difference| by 0.01 and its
    maximum by 0.25 (about 14 uint8 steps). The mode is part of
    :meth:`identity` (``"decode": "device"``), so artifacts of the two are
    not mixed.
    """

    def __init__(self, folder, preset=None, decode: str = "pil"):
        import torchvision
        from torchvision.models import AlexNet_Weights
        from torchvision.transforms import v2

        if decode not in ("pil", "device"):
            raise ValueError(f"decode={decode!r} is unknown; use 'pil' or 'device'.")
        self.decode = decode
        self.transform = preset or AlexNet_Weights.IMAGENET1K_V1.transforms()
        missing = [a for a in ("resize_size", "crop_size", "mean", "std") if not hasattr(self.transform, a)]
        if decode == "device" and missing:
            raise ValueError(f"decode='device' resizes and normalises as the preset does, but {self.transform!r} "
                             f"has no {', '.join(missing)}; use decode='pil'.")
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
            if self.decode != "pil":
                self._identity["decode"] = self.decode
        return self._identity

    def describe(self, i) -> str:
        return self.folder.samples[i][0]

    def bad_image(self, i, e: Exception) -> BadImageError:
        """The error for image ``i``, which ``e`` kept from being read."""
        where = f"image {i} ({self.describe(i)})" if i is not None else "an image of the batch"
        error = BadImageError(
            f"{where} cannot be read ({type(e).__name__}: {e}); replace or delete it, or set "
            "skip_bad_images=True to skip unreadable images (the artifacts list them).")
        error.__cause__ = e
        return error

    def _load(self, i):
        try:
            return self.folder[i]
        except Exception as e:  # truncated, not an image, unreadable: all name the file
            raise self.bad_image(i, e) from e

    def __getitem__(self, i):
        if self.decode == "device":
            from torchvision.io import read_file

            try:
                with warnings.catch_warnings():  # as in _decode_batch
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return read_file(self.describe(i)), self.folder.targets[i]
            except Exception as e:
                raise self.bad_image(i, e) from e
        image, label = self._load(i)
        return self.transform(image), label

    def finish(self, encoded: list, device=None, indices=None) -> torch.Tensor:
        """The batch of file bytes ``encoded`` (``__getitem__`` with ``decode="device"``) decoded on ``device``
        and preprocessed as the preset does: float32 ``(B, 3, H, W)`` on ``device``.

        ``indices``: the images' indices, to name a bad one. Raises :class:`BadImageError` for the first
        image that cannot be decoded; its ``failed`` lists ``(position, error)`` of every such image of
        the batch.
        """
        device = torch.device(device or "cpu")
        decoded, failed = _decode_batch(encoded, device)
        if failed:
            errors = [(k, self.bad_image(None if indices is None else int(indices[k]), e)) for k, e in failed]
            first = errors[0][1]
            first.failed = errors
            raise first
        return _preprocess(decoded, self.transform)

    def display(self, i) -> np.ndarray:
        """Image ``i`` resized and centre-cropped as the model sees it, ``uint8`` (H, W, 3)."""
        image, _ = self._load(i)
        return np.asarray(self.crop(image.convert("RGB")))


def _decode_batch(encoded: list, device: torch.device):
    """``(images, failed)``: each file decoded to ``uint8`` (3, h, w) on ``device``, and ``(position, error)``
    of those that cannot be.

    The batch is decoded at once; when that fails, one by one, and a file ``decode_jpeg`` refuses is tried
    with ``decode_image`` on the CPU (other formats) before it counts as bad.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    rgb = ImageReadMode.RGB
    if not encoded:
        return [], []
    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec; decode_jpeg is what is asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(list(encoded), mode=rgb, device=device)), []
        except Exception:
            pass
        return _decode_one_by_one(encoded, device)


def _decode_one_by_one(encoded: list, device: torch.device):
    """As :func:`_decode_batch`, file by file: ``decode_jpeg``, else ``decode_image`` on the CPU, else failed."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    rgb = ImageReadMode.RGB
    images, failed = [], []
    for k, data in enumerate(encoded):
        try:
            images.append(decode_jpeg(data, mode=rgb, device=device))
            continue
        except Exception as e:
            error = e
        try:
            images.append(decode_image(data, mode=rgb).to(device))
        except Exception:
            images.append(None)
            failed.append((k, error))
    return images, failed


def _preprocess(images: list, preset) -> torch.Tensor:
    """``uint8`` (3, h, w) images resized, centre-cropped, scaled and normalised as ``preset`` does, stacked."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    interpolation = getattr(preset, "interpolation", InterpolationMode.BILINEAR)
    crops = [F.center_crop(F.resize(im, list(preset.resize_size), interpolation=interpolation, antialias=True),
                           list(preset.crop_size)) for im in images]
    x = torch.stack(crops).float().div_(255)
    device = x.device
    mean = torch.tensor(preset.mean, dtype=x.dtype, device=device)[:, None, None]
    std = torch.tensor(preset.std, dtype=x.dtype, device=device)[:, None, None]
    return x.sub_(mean).div_(std)


def image_folder(root, split: str, name: str = "data_root", preset=None, decode: str = "pil") -> FolderImages:
    """``<root>/<split>/<class>/<image>`` with the standard ImageNet preprocessing (``decode``: see
    :class:`FolderImages`).

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
    return FolderImages(folder, preset, decode)


CHANNELS = {"fashion_mnist": 1, "imagenet": 3, "imagefolder": 3}
"""Image channels of each dataset kind."""
