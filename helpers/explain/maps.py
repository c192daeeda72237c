"""08's unit maps and masks: a unit's code (its basis' ``encode``) at every position of every probe image,
and where it fires.

:func:`unit_maps` writes the maps of a layer's units (one per vector: the two
signs of a vector share it; :func:`encoders` says which) into a memory map the
caller made; :func:`unit_masks` turns them into each unit's threshold and mask.
Memory: one batch of activations and its codes, or one unit's map and mask.
With ``torch.distributed`` ranks, each writes its shard of the probe images'
columns (:func:`helpers.explain.explanations.unit_maps_rank`).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..images.batches import Batches
from ..images.common import example
from ..models.running import get_device, place
from ..models.sites import sites as layer_sites
from ..pipeline import distributed
from ..sampling import capture, forward_until
from .formula import threshold, unit_pixels


def encoders(units) -> tuple[list, list]:
    """``(encoders, at)``: the maps the units need, and which map is each unit's.

    ``units``: :class:`~helpers.explain.rows.Unit` rows of one layer.
    ``encoders``: ``[(basis, [0-based columns]), ...]``, each basis once, in
    order of first appearance (:func:`unit_maps`' maps are in this order);
    ``at[i]``: the index of unit ``i``'s map (both signs of a vector share one).
    """
    cols: dict = {}
    for u in units:
        mine = cols.setdefault(u.basis, [])
        if u.component - 1 not in mine:
            mine.append(u.component - 1)
    start, offset = {}, 0
    for basis, c in cols.items():
        start[basis], offset = offset, offset + len(c)
    return list(cols.items()), [start[u.basis] + cols[u.basis].index(u.component - 1) for u in units]


def unit_masks(maps, units, quantile: float, size, device=None):
    """Each unit's threshold and mask, one unit at a time, in the order of ``units``.

    Parameters
    ----------
    maps : ndarray (memmap) of shape (K, n, h, w), float32
        The maps of :func:`unit_maps` for :func:`encoders` ``(units)``.
    units : list of Unit
        A ``"-"`` unit's map is its vector's, negated.
    quantile : float
        A unit fires at its top ``quantile`` of values over the probe set (:func:`~helpers.explain.threshold`).
    size : (H, W)
        The concept masks' side: the maps are upsampled to it (:func:`~helpers.explain.unit_pixels`).

    Yields
    ------
    (threshold, pixels) : float, ndarray of int64
        The unit's threshold and its mask's global pixel indices (``image · H · W + y · W + x``).

    Memory: one unit's map (``4 · n · h · w`` bytes, and a float64 copy for the
    threshold) and its mask (8 bytes per pixel that fires, about ``quantile · n · H · W``).
    """
    _, at = encoders(units)
    for u, m in zip(units, at):
        values = maps[m] * (1 if u.sign == "+" else -1)
        thr = threshold(values, quantile)
        yield thr, unit_pixels(values, thr, size, device=device)


@torch.no_grad()
def unit_maps(model, images, indices, layer: str, encoders, out, *, batch_size: int = 256,
              num_workers: int = 0, device=None, span: tuple | None = None) -> np.ndarray:
    """Write every unit's map over the probe images into ``out`` (memmap (K, n, h, w) float32).

    ``encoders``: ``[(basis, columns), ...]``; a unit's map is its code
    (``basis.encode``) at every position, the maps in the order of the pairs
    and their columns (K in all). ``span = (lo, hi)``: only the images of
    those slots (one rank's shard), into ``out[:, lo:hi]``.

    Memory: one batch of activations and its codes (``4 · batch · h · w · (d + K)``
    bytes, on ``device``); the maps go to ``out`` (``4 · K · n · h · w`` bytes, on disk).
    """

    device = get_device(device)
    model = place(model, device)
    site = layer_sites(model, [layer], example(images, indices).to(device))
    lo, hi = span or (0, len(indices))
    at = lo
    batches = Batches(images, indices, batch_size, num_workers, device, start=lo, stop=hi)
    with capture(model, site, stop_after=layer) as got:
        for x, _, _ in tqdm(batches, desc=f"unit maps {layer}", leave=False, disable=distributed.rank()[0] != 0):
            forward_until(model, x.to(device))
            a = got[layer].float()
            rows = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])
            codes = torch.cat([basis.encode(rows)[:, list(cols)] for basis, cols in encoders], dim=1)
            m = codes.T.reshape(-1, len(a), a.shape[2], a.shape[3])
            out[:, at:at + len(a)] = m.cpu().numpy()
            at += len(a)
    return out
