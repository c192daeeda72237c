"""Receptive fields: the input box that a position of a layer sees, and patch crops.

Along each axis a position ``i`` of a layer sees input pixels
``[offset + i * stride, offset + i * stride + size)``. For a convolution or
pooling (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``) applied to
a map with field ``(size, stride, offset)``:

    size'   = size + (k - 1) * d * stride
    offset' = offset - p * stride
    stride' = stride * s

An operation with several inputs of the same resolution (a residual add, a
concatenation) sees the union of its inputs' boxes: every path counts, so a
ResNet's 1×1 stride-2 downsample branch widens nothing, and is not composed as
one more stride. The fields are computed on the model's traced graph
(``torch.fx``), running it once on an example so that every node's resolution
is known; a layer's field is that of the last node computed inside its module.

What a family's positions are decides the method (``Family.field_kind``):
``graph`` (CNN maps, above), ``patch`` (a ViT token: its own patch with
``margin`` patches of context on each side, a documented choice: attention
mixes every token, so the true field is the whole image), ``whole`` (vectors:
the whole image). A model that cannot be traced falls back to the gradient
support of the centre position (an estimate) and says so.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import fx, nn

from .families import family_of
from .sites import sites as layer_sites

log = logging.getLogger(__name__)


SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


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


def compose(f: Field, m: nn.Module) -> Field:
    """The field after the conv or pooling ``m`` applied to a map whose field is ``f``."""
    k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
    d = _pair(getattr(m, "dilation", 1))
    return Field(f.size + (k - 1) * d * f.stride, f.stride * s, f.offset - p * f.stride)


def chain_field(modules) -> Field:
    """The field of the output of ``modules`` (conv/pool layers in order)."""
    f = Field(1, 1, 0)
    for m in modules:
        f = compose(f, m)
    return f


def union(fields) -> Field:
    """The smallest field holding every one of ``fields`` (same stride)."""
    strides = {f.stride for f in fields}
    if len(strides) != 1:
        raise _Untraceable(f"inputs of strides {sorted(strides)} meet")
    top = min(f.offset for f in fields)
    return Field(max(f.offset + f.size for f in fields) - top, strides.pop(), top)


class _Untraceable(Exception):
    pass


WHOLE = "whole"  # a node that sees the whole image


CONST = "const"  # a parameter or constant: no field


class _Propagate(fx.Interpreter):
    """Runs a traced model, computing every node's field from its inputs' fields."""

    def __init__(self, gm):
        super().__init__(gm)
        self.fields, self.sizes = {}, {}

    def run_node(self, n):
        out = super().run_node(n)
        self.sizes[n] = tuple(out.shape[2:]) if isinstance(out, torch.Tensor) and out.ndim == 4 else None
        self.fields[n] = self._field(n, out)
        return out

    def _field(self, n, out):
        if n.op == "placeholder":
            return Field(1, 1, 0) if self.sizes[n] else WHOLE
        inputs = [a for a in n.all_input_nodes if self.fields.get(a, CONST) != CONST]
        if not inputs:
            return CONST
        if self.sizes[n] is None or any(self.fields[a] == WHOLE for a in inputs):
            return WHOLE
        module = self.module.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(module, SPATIAL):
            return compose(self.fields[inputs[0]], module)
        if isinstance(module, ADAPTIVE) and self.sizes[inputs[0]] != self.sizes[n]:
            return WHOLE
        if any(self.sizes[a] != self.sizes[n] for a in inputs):
            raise _Untraceable(f"{n.op} {n.target} changes the resolution")
        return union([self.fields[a] for a in inputs])


def graph_fields(model: nn.Module, paths: dict, example: torch.Tensor) -> dict:
    """``{name: Field or None}`` for module ``paths`` (``{name: path}``), over every path of the graph.

    Raises ``_Untraceable`` when the model cannot be traced or holds an
    operation that changes the resolution in an unknown way.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow and friends
        raise _Untraceable(f"torch.fx cannot trace it ({type(e).__name__})") from None
    run = _Propagate(gm)
    with torch.no_grad():
        run.run(example.unsqueeze(0))
    out = {}
    for name, path in paths.items():
        inside = [n for n in gm.graph.nodes
                  if n.target == path or path in {re.sub(r"@\d+$", "", k) for k in n.meta.get("nn_module_stack", {})}]
        if not inside:
            raise _Untraceable(f"no traced node belongs to {path}")
        f = run.fields[inside[-1]]
        out[name] = f if isinstance(f, Field) else None
    return out


def gradient_field(model: nn.Module, site, example: torch.Tensor) -> Field | None:
    """An estimate: the box of input pixels whose gradient reaches the centre position (and its neighbour)."""
    _, h, w = site.shape
    y, x = h // 2, w // 2
    boxes = []
    for xx in ([x, x + 1] if x + 1 < w else [x]):
        inp = (example + 0.1 * torch.randn_like(example)).unsqueeze(0).requires_grad_(True)
        got = {}
        handle = model.get_submodule(site.path).register_forward_hook(lambda m, a, o: got.setdefault("out", o))
        try:
            model(inp)
        finally:
            handle.remove()
        site.read(got["out"])[0, :, y, xx].sum().backward()
        rows, cols = np.nonzero(inp.grad[0].abs().sum(0).numpy() > 0)
        if len(rows) == 0:
            return None
        boxes.append((rows.min(), cols.min(), max(rows.max() - rows.min(), cols.max() - cols.min()) + 1))
    stride = int(boxes[1][1] - boxes[0][1]) if len(boxes) > 1 else max(1, example.shape[-1] // w)
    return Field(int(boxes[0][2]), stride, int(boxes[0][0]) - y * stride)


def receptive_fields(model: nn.Module, layers, example: torch.Tensor, margin: float = 0.5) -> dict:
    """Field of every layer; ``None`` for layers that see the whole image.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str, or dict of ``Site``
        Layer names, or the sites from :func:`helpers.models.sites.sites`.
    example : Tensor of shape (C, H, W)
        Any input of the model's size.
    margin : float
        A ViT token's context around its patch, in patches on each side.
    """
    model = model.eval()
    sites = layers if isinstance(layers, dict) else layer_sites(model, layers, example)
    fam = family_of(model)
    kinds = {name: fam.field_kind(model, s) for name, s in sites.items()}
    out = {name: None for name, k in kinds.items() if k == "whole"}
    for name, k in kinds.items():
        if k == "patch":
            p = fam.patch_size(model)
            m = int(round(margin * p))
            out[name] = Field(p + 2 * m, p, -m)
    graph = {name: sites[name].path for name, k in kinds.items() if k == "graph"}
    if graph:
        try:
            out.update(graph_fields(model, graph, example))
        except _Untraceable as e:
            log.warning("receptive fields of %s estimated from gradient support: %s", type(model).__name__, e)
            out.update({name: gradient_field(model, sites[name], example) for name in graph})
    return {name: out[name] for name in sites}


def crop(image: np.ndarray, box, out_size: int, fill: int = 0) -> np.ndarray:
    """The patch ``box = (top, left, size)`` of ``image``, padded where it leaves the image.

    Parameters
    ----------
    image : ndarray of shape (H, W, C), uint8
    box : tuple of int, or None
        ``None`` means the whole image. A box wider than the image is shrunk
        to the image's size around its centre, so the patch is not mostly padding.
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
        if size > max(h, w):  # a field wider than the image (deep ResNet layers): the image's size, same centre
            top, left, size = top + (size - max(h, w)) // 2, left + (size - max(h, w)) // 2, max(h, w)
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
