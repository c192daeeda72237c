"""08's unit maps: a unit's code (its basis' ``encode``) at every position of every probe image.

Memory: one batch of activations and its codes; the maps go to a memory map the caller made. With
``torch.distributed`` ranks, each writes its shard of the probe images' columns (:func:`unit_maps_rank`).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..images.batches import Batches
from ..images.common import example, images_key
from ..models.running import get_device, place
from ..models.sites import sites as layer_sites
from ..pipeline import distributed, provenance
from ..sampling import capture, forward_until
from .probe import probe


@torch.no_grad()
def unit_maps(model, images, indices, layer: str, encoders, out, *, batch_size: int = 256,
              num_workers: int = 0, device=None, span: tuple | None = None) -> np.ndarray:
    """Write every unit's map over the probe images into ``out`` (memmap (K, n, h, w) float32).

    ``encoders``: ``[(basis, columns), ...]``; a unit's map is its code
    (``basis.encode``) at every position, the maps in the order of the pairs
    and their columns (K in all). ``span = (lo, hi)``: only the images of
    those slots (one rank's shard), into ``out[:, lo:hi]``.
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


def unit_maps_rank(p, layer: str, encoders: list, scratch: str, images: dict, model: str) -> None:
    """One rank of a distributed :func:`unit_maps`: its shard of the profile's probe images into ``scratch``.

    ``images`` and ``model`` are the driver's probe images and model ids; a rank that rebuilds others stops.
    """
    from ..bases import layer_bases
    from ..models.loading import load_model

    device = distributed.device(p.device)
    net, info = load_model(p, train=False)
    probe_images, indices, _ = probe(p)
    mine = {"model": info["id"], "images": images_key(probe_images, indices)}
    distributed.same_key({"inputs": mine, "code": {}}, {"inputs": {"model": model, "images": images}, "code": {}},
                         "set of unit maps")
    fitted = layer_bases(p.artifact("bases"), layer, p.bases, provenance.expected(p, "bases"))
    out = np.load(scratch, mmap_mode="r+")
    unit_maps(net, probe_images, indices, layer, [(fitted[b], cols) for b, cols in encoders], out,
              batch_size=p.batch_size, num_workers=p.num_workers, device=device,
              span=distributed.shard(len(indices), p.batch_size))
    out.flush()
