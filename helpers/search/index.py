"""Step 3 of the method: a FAISS index of patch activations per layer.

For each layer, the pre-ReLU activation vectors at every spatial position of
the eval images (or a seeded subsample of ``cap`` positions), centred with the
sample mean, go into a FAISS index; their ``(image, y, x)`` are kept beside it.
Exact ``IndexFlatL2`` by default; ``IndexIVFFlat`` (``nlist`` lists, searched
with ``nprobe``) for paper-scale sets, its quantiser trained on the layer's
sample from 01 (the same distribution, available before the pass). Indexes are
built on the CPU, saved, and moved to a GPU for search when faiss has one
(:mod:`.knn`). With ``ranks``, the images are forwarded by ``torch.distributed``
ranks and their shards added in the one-process order.
"""
from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from ..bases import fit as _bases  # the bases (their means centre the vectors); importing it declares them
from ..images.batches import Batches
from ..images.common import example, images_key
from ..models.running import get_device, place
from ..models.sites import sites as layer_sites
from ..models.inputs import selection
from ..models.loading import model_id
from ..pipeline import costs, distributed, provenance, store
from ..sampling import capture, forward_until
from .knn import as_float32, new_index, to_device

log = logging.getLogger(__name__)


MADE_BY = "03_index (python -m helpers.run --only 03)"

def choose_positions(n_images: int, hw: int, cap: int | None, seed: int) -> np.ndarray | None:
    """Sorted flat ids ``image * hw + position`` of a seeded subsample of at most ``cap``; None: all."""
    total = n_images * hw
    if cap is None or cap >= total:
        return None
    return np.sort(np.random.default_rng([seed, 3]).choice(total, size=cap, replace=False))


def index_key(p) -> dict:
    """What profile ``p``'s index is made from: its settings, the eval images, the model, the bases (means) and,
    for IVF, the sample (the quantiser's training vectors), this code.

    The one key of step 3: the driver (:func:`make_index`), each rank and provenance call it.
    """
    ivf = p.index_kind == "ivf"
    params = {"layers": list(p.layers), "cap": p.index_cap, "kind": p.index_kind, "seed": int(p.seed),
              **({"nlist": p.nlist} if ivf else {})}
    inputs = {"model": model_id(p), "images": images_key(*selection(p, "eval")),
              "bases": provenance.require(p, "bases")["hash"],
              **({"sample": provenance.require(p, "sample")["hash"]} if ivf else {})}
    return provenance.key(__name__, params, inputs)


def make_index(p, ranks=None) -> dict:
    """Step 3 for profile ``p``: its index (reused when current); returns the sidecar.

    The vectors are centred with the PCA mean of each layer (from the bases); an IVF quantiser is trained
    on the sample. ``ranks``: default the profile's (:func:`helpers.pipeline.distributed.ranks`).
    """
    from ..models.loading import load_model
    from ..sampling import open_sample

    key = index_key(p)  # refuses stale bases (and sample)
    model, _ = load_model(p, train=False)
    dataset, indices = selection(p, "eval")
    means = {layer: _bases.load_basis(p.artifact("bases"), layer).mean_ for layer in p.layers}
    train = ({layer: open_sample(p.artifact("sample"), layer)[0] for layer in p.layers}
             if p.index_kind == "ivf" else None)
    return index_activations(model, dataset, p.layers, means, p.artifact("index"), key, indices=indices,
                             cap=p.index_cap, kind=p.index_kind, nlist=p.nlist, train=train, seed=p.seed,
                             batch_size=p.batch_size, num_workers=p.num_workers, device=p.device,
                             skip_bad=p.skip_bad_images, profile=p.name,
                             ranks=distributed.ranks(p) if ranks is None else ranks)


def index_activations(model, dataset, layers, means: dict, folder, key: dict, *, indices=None, cap=None,
                      kind: str = "flat", nlist: int = 1024, train: dict | None = None, seed: int = 0,
                      batch_size: int = 256, num_workers: int = 0, device=None, skip_bad: bool = False,
                      profile: str = "", ranks=None) -> dict:
    """Index every (or a capped subsample of every) position of ``layers`` over ``dataset``.

    Parameters
    ----------
    means : dict
        ``{layer: ndarray of shape (d,)}``, the sample mean; vectors are centred with it.
    cap : int, optional
        Most positions per layer (seeded subsample); ``None``: all.
    train : dict, optional
        ``{layer: (n, d) array}`` of vectors to train an IVF quantiser (centred here).
    key : dict
        The artifact's key (:func:`index_key` for a profile).
    skip_bad : bool
        Leave out unreadable images (listed in the sidecar) instead of stopping.
    ranks : helpers.pipeline.distributed.Ranks, optional
        With more than one process, each rank forwards its shard of the images
        (whole batches of the one-process run) and the driver adds the shards
        to the index in rank order: the index and locations are those of one
        process. Each rank rebuilds the model and images from the profile
        ``ranks.p`` and stops unless its :func:`index_key` is ``key``.

    Returns
    -------
    dict
        The sidecar. Files: ``<layer>.faiss`` (CPU index) and ``<layer>_loc.npy``
        int32 of shape (N, 3) holding ``(image, y, x)`` of each indexed vector.

    Notes
    -----
    Memory: the indexes themselves (``N * d * 4`` bytes per layer for Flat and
    IVF-Flat) plus one batch of activations; distributed, each rank also holds
    its shard's vectors (``N * d * 4 / world`` bytes) until it writes them.
    """
    device = get_device(device)
    model = place(model, device)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    sites = layer_sites(model, layers, example(dataset, indices).to(device))
    shapes = {name: s.shape for name, s in sites.items()}
    many = ranks is not None and ranks.distributed
    work = dict(key=key, folder=str(folder), layers=list(layers), means={k: np.asarray(v, np.float32).tolist()
                                                                           for k, v in means.items()})
    if many and not ranks.main:
        return ranks.follow(index_rank, folder, key, MADE_BY, **work)
    with store.Build(folder, key, MADE_BY, profile=profile, resumable=False, skip_bad=skip_bad) as b:
        if b.current:
            return b.meta
        mean = {name: np.asarray(means[name], np.float32) for name in shapes}
        indexes = {name: new_index(s[0], kind, nlist, None if train is None else
                                   np.asarray(train[name], np.float32) - mean[name], seed)
                   for name, s in shapes.items()}
        locs = {name: [] for name in shapes}
        if many:
            ranks.launch(index_rank, **work)
            parts, bad = _merge(b.partial, shapes, ranks.world)
        else:
            parts, bad = _indexed(model, dataset, indices, sites, mean, cap, seed, batch_size, num_workers, device,
                                  skip_bad, (0, len(indices)))
        for name, vectors, loc in parts:
            indexes[name].add(vectors)
            locs[name].append(loc)
        files = []
        for name in shapes:
            with store.atomic(b.partial / f"{name}.faiss") as tmp:
                faiss.write_index(indexes[name], str(tmp))
            np.save(b.partial / f"{name}_loc.npy", np.concatenate(locs[name]))
            files += [f"{name}.faiss", f"{name}_loc.npy"]
        return b.commit(files, extra={"shapes": {k: list(v) for k, v in shapes.items()},
                                      "vectors": {k: int(sum(len(v) for v in locs[k])) for k in shapes},
                                      "bad_images": bad})


def _indexed(model, dataset, indices, sites, mean, cap, seed, batch_size, num_workers, device, skip_bad, span):
    """``(parts, bad)``: an iterator of ``(layer, centred vectors (m, d) float32, locations (m, 3))`` per batch
    of the slots ``span = (lo, hi)``, and the list its unreadable images are appended to as it goes."""
    from ..pipeline.distributed import rank

    shapes = {name: s.shape for name, s in sites.items()}
    hw = {name: int(np.prod(s[1:])) if len(s) == 3 else 1 for name, s in shapes.items()}
    chosen = {name: choose_positions(len(indices), hw[name], cap, seed) for name in shapes}
    centre = {name: torch.as_tensor(mean[name]).to(device) for name in shapes}
    batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad, start=span[0],
                      stop=span[1])

    def parts():
        with torch.no_grad(), capture(model, sites, stop_after=list(shapes)[-1]) as out, \
                tqdm(total=span[1] - span[0], desc="index activations", unit="img",
                     disable=rank()[0] != 0) as bar:
            for x, _, slots in batches:
                forward_until(model, x.to(device, non_blocking=True))
                for name, shape in shapes.items():
                    rows, flat = _chosen_rows(out[name].float(), slots.numpy(), hw[name], chosen[name])
                    slot, pos = np.divmod(flat, hw[name])
                    w = shape[2] if len(shape) == 3 else 1
                    yx = np.stack([pos // w, pos % w], 1) if len(shape) == 3 else np.full((len(pos), 2), -1)
                    yield (name, as_float32((rows - centre[name]).cpu().numpy()),
                           np.column_stack([indices[slot], yx]).astype(np.int32))
                bar.update(len(x))

    return parts(), batches.bad


def index_rank(p, key: dict, folder: str, layers: list, means: dict) -> None:
    """One rank of a distributed :func:`index_activations`: its shard of the profile's eval images, written
    as ``<layer>.<rank>.npy`` (centred vectors) and ``<layer>_loc.<rank>.npy`` into the partial artifact
    for the driver to add to the index in rank order (the one-process order)."""
    from ..models.loading import load_model

    distributed.same_key(index_key(p), key, "index")
    device = distributed.device(p.device)
    model, _ = load_model(p, train=False)
    model = place(model, device)
    dataset, indices = selection(p, "eval")
    indices = np.asarray(indices)
    sites = layer_sites(model, layers, example(dataset, indices).to(device))
    mean = {k: np.asarray(v, np.float32) for k, v in means.items()}
    r = distributed.rank()[0]
    parts, bad = _indexed(model, dataset, indices, sites, mean, p.index_cap, p.seed, p.batch_size, p.num_workers,
                          device, p.skip_bad_images, distributed.shard(len(indices), p.batch_size))
    got = {name: ([], []) for name in sites}
    for name, vectors, loc in parts:
        got[name][0].append(vectors)
        got[name][1].append(loc)
    partial = Path(f"{folder}.partial")
    for name, s in sites.items():
        vectors = np.concatenate(got[name][0]) if got[name][0] else np.zeros((0, s.shape[0]), np.float32)
        loc = np.concatenate(got[name][1]) if got[name][1] else np.zeros((0, 3), np.int32)
        for path, array in ((partial / f"{name}.{r}.npy", vectors), (partial / f"{name}_loc.{r}.npy", loc)):
            with store.atomic(path) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
    store.write_json(partial / f"bad.{r}.json", bad)


def _merge(partial, shapes, world):
    """The ranks' shards of :func:`index_rank` in rank order (as :func:`_indexed` yields them), and their bad
    images; each shard file is removed once read."""
    bad = []
    for r in range(world):
        bad += store.read_json(partial / f"bad.{r}.json", MADE_BY)
        (partial / f"bad.{r}.json").unlink()

    def parts():
        for r in range(world):
            for name in shapes:
                vectors, loc = np.load(partial / f"{name}.{r}.npy"), np.load(partial / f"{name}_loc.{r}.npy")
                (partial / f"{name}.{r}.npy").unlink()
                (partial / f"{name}_loc.{r}.npy").unlink()
                yield name, vectors, loc

    return parts(), bad


def _chosen_rows(a: torch.Tensor, slots: np.ndarray, hw: int, chosen: np.ndarray | None):
    """The vectors of one batch's activations ``a`` ((B, C, H, W) or (B, C)) that are indexed, gathered where
    ``a`` is (only they leave the GPU), and their flat ids ``slot * hw + position``, ascending.

    ``slots``: the batch's slots (ascending); ``chosen``: the sorted flat ids to keep (None: all).
    """
    if chosen is None:
        flat = (slots[:, None] * hw + np.arange(hw)).ravel()
        return (a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]) if a.ndim == 4 else a), flat
    lo, hi = np.searchsorted(chosen, [slots[0] * hw, (slots[-1] + 1) * hw])
    picked = chosen[lo:hi]
    row = np.searchsorted(slots, picked // hw)
    flat = picked[slots[np.minimum(row, len(slots) - 1)] == picked // hw]  # leave out slots not in the batch
    b = torch.from_numpy(np.searchsorted(slots, flat // hw)).to(a.device)
    if a.ndim == 4:
        return a.flatten(2)[b, :, torch.from_numpy(flat % hw).to(a.device)], flat
    return a[b], flat


def load_index(folder, layer: str, nprobe: int | None = None, device=None, key: dict | None = None):
    """``(index, loc)`` of one layer: the FAISS index (on GPU when available) and (N, 3) locations.

    ``key``: the key the index must have (see :mod:`helpers.pipeline.provenance`).
    """
    folder = Path(folder)
    meta = store.read_meta(folder, key, MADE_BY)
    if layer not in meta["shapes"]:
        raise ValueError(f"layer={layer!r} is not indexed in {folder} (it has {list(meta['shapes'])}); "
                         "rerun 03_index with that layer.")
    try:
        index = faiss.read_index(str(folder / f"{layer}.faiss"))
    except RuntimeError as e:
        raise store.CorruptArtifactError(f"{folder / f'{layer}.faiss'} is corrupt ({str(e).splitlines()[0]}); "
                                         f"delete {folder} and rerun {MADE_BY}.") from None
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = nprobe
    return to_device(index, device), store.open_array(folder, f"{layer}_loc", MADE_BY)


def indexed(p, scale, layer: str) -> int:
    """Vectors the index of ``layer`` holds: every position of the eval images, at most ``index_cap``."""
    n = scale.images["eval"] * scale.positions(layer)
    return min(n, p.index_cap) if p.index_cap else n


def _cost(p, scale) -> costs.Cost:
    """Per layer the FAISS index (``N * d * 4`` bytes; IVF: the list ids and centroids too) and the (N, 3)
    int32 locations, every index in memory until written; every eval image loaded and forwarded once."""
    n = scale.images["eval"]
    files = 0
    for layer in p.layers:
        N, d = indexed(p, scale, layer), scale.d(layer)
        files += N * d * 4 + 4096 + costs.npy_bytes(N, 3) + ((N * 8 + p.nlist * d * 4) if p.index_kind == "ivf" else 0)
    batch = min(p.batch_size, n)
    return costs.Cost(disk=files, host=files + batch * scale.forward_bytes,
                      device=scale.param_bytes + batch * scale.forward_bytes, work={"images": n})


STEP = provenance.declare(
    __name__, "03_index", "index", key=index_key, reads=("model", "bases", "sample"), build=make_index,
    rank=index_rank, optional={"sample": lambda p: p.index_kind == "ivf"},
    settings=("model", "layers", "eval_split", "n_eval", "index_kind", "index_cap", "nlist", "seed"),
    uses=("bases", "batch_size", "num_workers", "device", "skip_bad_images", *distributed.SETTINGS),
    cost=_cost)
