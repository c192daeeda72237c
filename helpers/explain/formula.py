"""Compositional explanations (Mu & Andreas, NeurIPS 2020): formulas over concepts, unit masks, IoU.

A unit (a neuron, or the projection on a principal component, each sign its
own unit) is explained by the logical formula over concepts whose mask best
overlaps the unit's mask, by intersection over union over every pixel of the
probe set. The defaults are those of the reference code:

1. threshold: the unit's top ``quantile = 0.005`` over the probe set at the
   map's own resolution (:func:`threshold`, exact);
2. the map is upsampled bilinearly with half-pixel centres
   (``align_corners=False``) to the mask size; the unit's mask is
   ``upsampled > threshold`` (:func:`unit_pixels`);
3. ``IoU = |M ∧ A| / (|M| + |A| − |M ∧ A|)`` (:func:`iou`).

The search over formulas is :mod:`.beam` (the reference's) and :mod:`.optimal` (certified).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

OPS = ("OR", "AND", "AND NOT")
"""The operators, in the order candidates are enumerated (as the reference: per beam formula, per concept, per op)."""


# -- the unit's mask ------------------------------------------------------------------------------------
def threshold(values, quantile: float = 0.005) -> float:
    """The unit's threshold: the ``1 − quantile`` quantile of all its values (numpy's linear interpolation).

    Exact for any number of values (``np.partition``, not ``torch.quantile``,
    which refuses inputs over 16 M elements). Memory: one copy of ``values``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("threshold() of no values: the probe set has no image.")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1), e.g. 0.005 (the top 0.5 %).")
    pos = (v.size - 1) * (1 - quantile)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    part = np.partition(v, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def upsample(maps, size, device=None) -> torch.Tensor:
    """Maps (n, h, w) bilinearly upsampled to ``size`` (H, W), half-pixel centres, as float32."""
    x = torch.as_tensor(np.ascontiguousarray(maps), dtype=torch.float32, device=device)
    return F.interpolate(x[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def unit_pixels(maps, thr: float, size, device=None, chunk: int = 256) -> np.ndarray:
    """Global pixel indices (``image · H · W + y · W + x``) of the unit's mask, ``upsampled > thr``.

    Only images whose map exceeds ``thr`` somewhere are upsampled: bilinear
    upsampling is a convex combination of the map's values, so the others have
    an empty mask. ``maps``: (n, h, w). Memory: ``chunk · H · W`` floats.
    """
    maps = np.asarray(maps)
    H, W = size
    firing = np.flatnonzero(maps.reshape(len(maps), -1).max(1) > thr)
    out = []
    for s in range(0, len(firing), chunk):
        rows = firing[s:s + chunk]
        up = upsample(maps[rows], size, device)
        img, pix = torch.nonzero(up.reshape(len(rows), -1) > thr, as_tuple=True)
        out.append(rows[img.cpu().numpy()].astype(np.int64) * (H * W) + pix.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def iou(intersection, mask, unit):
    """``I / (|M| + |A| − I)`` elementwise (0 where both masks are empty), float64."""
    inter = np.asarray(intersection, np.float64)
    union = np.asarray(mask, np.float64) + float(unit) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)


# -- formulas -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """A left-deep formula: ``first`` then ``(op, concept)`` steps; ``len`` is its number of concepts."""

    first: int
    steps: tuple = ()

    def __len__(self):
        return 1 + len(self.steps)

    def then(self, op: str, concept: int) -> "Formula":
        return Formula(self.first, self.steps + ((op, int(concept)),))

    def text(self, names) -> str:
        """``(water OR river) AND NOT blue``."""
        out = names[self.first]
        for i, (op, c) in enumerate(self.steps):
            out = f"{'(' + out + ')' if i else out} {op} {names[c]}"
        return out

    def evaluate(self, column) -> np.ndarray:
        """The formula's mask, given ``column(c)``: the boolean mask of concept ``c`` (any shape)."""
        mask = column(self.first)
        for op, c in self.steps:
            other = column(c)
            mask = mask | other if op == "OR" else mask & other if op == "AND" else mask & ~other
        return mask
