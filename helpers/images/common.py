"""Datasets behind one interface (:mod:`.fashion`: Fashion-MNIST, offline; :mod:`.folders`: ImageNet or any
ImageFolder), which images a step uses, and their identity.

Every dataset returned here yields ``(image_tensor, label)`` pairs ready for the
model, and has ``display(i)``: the same image as a ``uint8`` array of shape
``(H, W, C)``, cropped as the model sees it but not normalised, for patches;
``describe(i)``: where image ``i`` comes from (its file); ``identity()``: what
the dataset is, cheaply (content digest, or root, classes and file list), for
the provenance of every artifact made from it; and ``input_shape``.

An image that cannot be read raises :class:`BadImageError` naming its path and
index; :class:`helpers.images.batches.Batches` feeds a model and can skip such images
instead, listing them (``skip_bad_images``).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


class BadImageError(OSError):
    """An image of the dataset cannot be read or decoded."""


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


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
    """An input of the dataset's shape and dtype (zeros when the shape is known: no image is read)."""
    shape = getattr(dataset, "input_shape", None)
    if shape is not None:
        return torch.zeros(shape, dtype=getattr(dataset, "input_dtype", torch.float32))
    first = 0 if indices is None or len(indices) == 0 else int(np.asarray(indices)[0])
    return dataset[first][0]
