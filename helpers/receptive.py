"""Receptive fields: the input box that a spatial position of a layer sees, and patch crops.

For a chain of convolutions and poolings (kernel ``k``, stride ``s``, padding
``p``), a unit of the chain's output sees input pixels
``[offset + i * stride, offset + i * stride + size)`` along each axis, with

    size'   = size + (k - 1) * stride
    offset' = offset - p * stride
    stride' = stride * s

starting from ``size = stride = 1, offset = 0`` at the input. The chain is
read off the model by running it once and recording, in execution order, the
conv and pooling modules up to the layer; so any sequential CNN works.
Layers after a flatten (fc) see the whole image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .models import layer_paths

SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Field:
    """Receptive field of a layer's positions along each axis (square kernels)."""

    size: int
    stride: int
    offset: int

    def box(self, y: int, x: int) -> tuple[int, int, int]:
        """``(top, left, size)`` of position ``(y, x)`` in input pixels (may leave the image)."""
        return self.offset + y * self.stride, self.offset + x * self.stride, self.size


def _pair(v) -> int:
    v = v if isinstance(v, (tuple, list)) else (v, v)
    if v[0] != v[1]:
        raise ValueError(f"non-square kernel/stride/padding {v} is not supported by receptive fields.")
    return int(v[0])


def chain_field(modules) -> Field:
    """The field of the output of ``modules`` (conv/pool layers in order)."""
    size, stride, offset = 1, 1, 0
    for m in modules:
        k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        size += (k - 1) * d * stride
        offset -= p * stride
        stride *= s
    return Field(size, stride, offset)


@torch.no_grad()
def receptive_fields(model, layers, example) -> dict[str, Field | None]:
    """Field of every layer; ``None`` for layers that see the whole image (fc).

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str
    example : Tensor of shape (C, H, W)
        Any input; only the order in which modules run is used.
    """
    paths = layer_paths(layers)
    order, handles = [], []
    for name, module in model.named_modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append((name, m, o))))
    try:
        model.eval()(example.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    fields = {}
    for layer, path in paths.items():
        position = next(i for i, (name, _, _) in enumerate(order) if name == path)
        if order[position][2].ndim != 4:
            fields[layer] = None
            continue
        fields[layer] = chain_field(m for _, m, _ in order[: position + 1] if isinstance(m, SPATIAL))
    return fields


def crop(image: np.ndarray, box, out_size: int, fill: int = 0) -> np.ndarray:
    """The patch ``box = (top, left, size)`` of ``image``, padded where it leaves the image.

    Parameters
    ----------
    image : ndarray of shape (H, W, C), uint8
    box : tuple of int, or None
        ``None`` means the whole image.
    out_size : int
        Thumbnail side; nearest-neighbour when enlarging, box filter when shrinking.
    fill : int
        Value of the padding.

    Returns
    -------
    ndarray of shape (out_size, out_size, C), uint8
    """
    h, w, c = image.shape
    if box is None:
        patch = image
    else:
        top, left, size = box
        patch = np.full((size, size, c), fill, dtype=image.dtype)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + size, h), min(left + size, w)
        if y1 > y0 and x1 > x0:
            patch[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    if patch.shape[0] == out_size and patch.shape[1] == out_size:
        return patch.copy()
    resample = Image.NEAREST if max(patch.shape[:2]) < out_size else Image.BOX
    pil = Image.fromarray(patch[..., 0] if c == 1 else patch)
    out = np.asarray(pil.resize((out_size, out_size), resample))
    return out[..., None] if c == 1 else out
