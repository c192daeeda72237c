"""Step 1 of the method: sample each layer's activations (a module's own output: pre-ReLU).

One forward pass per batch captures every requested layer through forward
hooks (always removed). Each layer is read as its family says
(:mod:`helpers.models`): for a map (a conv layer, a ViT's patch tokens)
one position per image is kept, drawn from a seeded generator; for a vector
(fc) the whole vector. The vectors stream into ``<layer>.npy`` memory maps with
their ``(image, y, x)`` in ``<layer>_loc.npy`` (``y = x = -1`` for vectors;
for a ViT, ``(y, x)`` is the patch of the token); progress is recorded so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .images.batches import Batches
from .images.common import example, images_key
from .models.running import get_device, place
from .models.sites import sites as layer_sites
from .models.inputs import selection
from .models.loading import model_id
from .pipeline import costs, distributed, provenance, store

log = logging.getLogger(__name__)


MADE_BY = "01_sample (python -m helpers.run --only 01)"


class _Stop(Exception):
    """Raised by the last hook to skip the rest of the network."""


@contextmanager
def capture(model, sites: dict, pick=None, stop_after: str | None = None):
    """Record the outputs of layers during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
    sites : dict
        ``{name: Site}`` from :func:`helpers.models.sites.sites`; each output
        is read as a map (B, C, H, W) or a vector (B, D).
    pick : callable, optional
        ``pick(name, output) -> tensor`` chooses what to keep; it must return a
        copy, because torchvision's in-place ReLU overwrites the output after
        the hook. Default: ``output.detach().clone()``.
    stop_after : str, optional
        After this layer's hook the forward pass is aborted (use
        :func:`forward_until` to run it); saves the rest of the network.

    Yields
    ------
    dict
        ``{name: tensor}``, refilled by every forward pass.
    """
    pick = pick or (lambda name, out: out.detach().clone())
    outputs, handles = {}, []

    def hook_for(name, site):
        def hook(module, args, out):
            outputs[name] = pick(name, site.read(args[0] if site.input else out))
            if name == stop_after:
                raise _Stop

        return hook

    try:
        for name, site in sites.items():
            handles.append(model.get_submodule(site.path).register_forward_hook(hook_for(name, site)))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def forward_until(model, x) -> None:
    """Run ``model(x)``, stopping quietly where a ``capture(stop_after=...)`` hook stops it."""
    try:
        model(x)
    except _Stop:
        pass


def layer_shapes(model, example, layers) -> dict[str, tuple]:
    """Shape of each layer's output as read (``(C, H, W)`` or ``(D,)``) for one input (C, H, W), in execution order."""
    return {name: s.shape for name, s in layer_sites(model, layers, example).items()}


def draw_positions(shapes: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """One seeded random ``(y, x)`` per image for each map layer.

    Returns ``{layer: ndarray of shape (n, 2)}`` with ``-1`` for vectors. The
    draw for a layer depends only on ``seed``, the layer name and ``n``, not
    on the batch size or on resuming.
    """
    positions = {}
    for name, shape in shapes.items():
        if len(shape) == 3:
            _, h, w = shape
            rng = np.random.default_rng([seed, *name.encode()])
            flat = rng.integers(0, h * w, size=n)
            positions[name] = np.stack([flat // w, flat % w], axis=1).astype(np.int32)
        else:
            positions[name] = np.full((n, 2), -1, dtype=np.int32)
    return positions


def sample_key(p) -> dict:
    """What profile ``p``'s sample is made from: layers, seed, which images, which model, this code.

    The one key of step 1: the driver (:func:`make_sample`), each rank and provenance call it.
    """
    return provenance.key(__name__, {"layers": list(p.layers), "seed": int(p.seed)},
                          {"model": model_id(p), "images": images_key(*selection(p, "sample"))})


def make_sample(p, ranks=None) -> dict:
    """Step 1 for profile ``p``: its sample (reused when current); returns the sidecar.

    ``ranks`` (default: the profile's ``nproc`` and machines, :func:`helpers.pipeline.distributed.ranks`).
    """
    from .models.loading import load_model

    model, _ = load_model(p, train=False)
    dataset, indices = selection(p, "sample")
    return sample_activations(model, dataset, p.layers, p.artifact("sample"), sample_key(p), indices=indices,
                              seed=p.seed, skip_bad=p.skip_bad_images, batch_size=p.batch_size,
                              num_workers=p.num_workers, device=p.device, profile=p.name,
                              ranks=distributed.ranks(p) if ranks is None else ranks)


def sample_activations(model, dataset, layers, folder, key: dict, *, indices=None, seed: int = 0,
                       skip_bad: bool = False, batch_size: int = 256, num_workers: int = 0, device=None,
                       profile: str = "", flush_seconds: float = 30.0, ranks=None) -> dict:
    """Sample pre-ReLU activations of ``layers`` over ``dataset`` into ``folder``.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; moved to ``device``.
    dataset : Dataset of (image, label)
    layers : sequence of str
    folder : path
        Artifact folder; written as ``<folder>.partial`` and renamed when done.
    indices : ndarray of shape (n,), optional
        Dataset indices to use (default: all), recorded in the locations.
    key : dict
        The artifact's key (:func:`sample_key` for a profile); an artifact of
        another key at ``folder`` is not reused.
    seed : int
        Seeds the spatial positions.
    skip_bad : bool
        Leave out unreadable images (listed in the sidecar's ``bad_images``)
        instead of stopping at the first.
    ranks : helpers.pipeline.distributed.Ranks, optional
        With more than one process, each rank samples its shard of the images
        (whole batches of the one-process run) into its rows of the same
        memory maps; each rank rebuilds the model, images and settings from the
        profile ``ranks.p`` and stops unless its :func:`sample_key` is ``key``.
        The files are those of one process.

    Returns
    -------
    dict
        The sidecar. Files: ``<layer>.npy`` float32 of shape (n, d) and
        ``<layer>_loc.npy`` int32 of shape (n, 3) holding ``(image, y, x)``.

    Notes
    -----
    Memory: one batch of activations on the device and the host (per rank),
    plus the positions (20 bytes per image per layer); the samples themselves
    go straight to disk (space reserved up front), so a split of any size fits.
    An interrupted run resumes at the first image of each shard not recorded
    as done; finished rows are never rewritten.
    """
    device = get_device(device)
    model = place(model, device)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    n = len(indices)
    if n == 0:
        raise ValueError("no images to sample: the dataset or the selection (indices, n_sample) is empty.")
    sites = layer_sites(model, layers, example(dataset, indices).to(device))
    shapes = {name: s.shape for name, s in sites.items()}
    if ranks is not None and ranks.distributed and not ranks.main:  # another machine prepares and finishes
        return ranks.follow(sample_rank, folder, key, MADE_BY, key=key, folder=str(folder),
                            flush_seconds=flush_seconds)
    with store.Build(folder, key, MADE_BY, profile=profile, skip_bad=skip_bad) as b:
        if b.current:
            return b.meta
        for name, shape in shapes.items():
            if not (b.partial / f"{name}.npy").exists():
                store.new_array(b.partial / f"{name}.npy", (n, shape[0]), np.float32)
        try:
            if ranks is not None and ranks.distributed:
                ranks.launch(sample_rank, key=key, folder=str(folder), flush_seconds=flush_seconds)
            else:
                _sample_slots(b.partial, model, dataset, indices, sites, seed, skip_bad, batch_size, num_workers,
                              device, flush_seconds, (0, n))
        finally:
            finished = sum(hi - lo for lo, hi in _done(b.partial)[0])
            b.save_progress(summary=f"{finished} of {n} images" if finished else None)
        return _finish(b, indices, sites, seed)


def sample_rank(p, key: dict, folder: str, flush_seconds: float = 30.0) -> None:
    """One rank of a distributed :func:`sample_activations`: its shard of the profile's sample images.

    Started by :func:`helpers.pipeline.distributed.launch`; ``key`` is the
    driver's, and a rank that rebuilds another (other weights, images or
    layers) stops with the difference.
    """
    from .models.loading import load_model

    distributed.same_key(sample_key(p), key, "sample")
    device = distributed.device(p.device)
    model, _ = load_model(p, train=False)
    model = place(model, device)
    dataset, indices = selection(p, "sample")
    indices = np.asarray(indices)
    sites = layer_sites(model, p.layers, example(dataset, indices).to(device))
    _sample_slots(Path(f"{folder}.partial"), model, dataset, indices, sites, p.seed, p.skip_bad_images,
                  p.batch_size, p.num_workers, device, flush_seconds, distributed.shard(len(indices), p.batch_size))


def _done(partial) -> tuple[list, list]:
    """``(done, bad)``: the finished slot ranges ``[lo, hi)`` recorded in ``partial``, and their bad images."""
    done, bad = [], []
    for f in sorted(Path(partial).glob("slots-*.json")):
        r = store.read_json(f, MADE_BY)
        if r["next"] > r["lo"]:
            done.append((r["lo"], r["next"]))
        bad += r["bad"]
    return sorted(done), sorted(bad, key=lambda r: r["slot"])


def _pending(lo: int, hi: int, done: list) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` not covered by the ranges ``done``."""
    out, at = [], lo
    for a, b in done:
        if b <= at or a >= hi:
            continue
        if a > at:
            out.append((at, a))
        at = max(at, b)
    return out + ([(at, hi)] if at < hi else [])


def _sample_slots(partial, model, dataset, indices, sites, seed, skip_bad, batch_size, num_workers, device,
                  flush_seconds, span) -> None:
    """Sample the slots ``span = (lo, hi)`` not yet done into the memory maps of ``partial`` (row = slot).

    Progress is recorded per run of slots in ``slots-<lo>-<hi>.json`` (the next slot, the bad images), at
    least every ``flush_seconds`` and at its end.
    """
    from .pipeline.distributed import rank

    partial, n = Path(partial), len(indices)
    shapes = {name: s.shape for name, s in sites.items()}
    positions = draw_positions(shapes, n, seed)
    where = {name: torch.from_numpy(positions[name]) for name in shapes}
    arrays = {name: np.load(partial / f"{name}.npy", mmap_mode="r+") for name in shapes}
    slots = torch.zeros(0, dtype=torch.long)

    def pick(name, out):
        if out.ndim == 4:  # (B, C, H, W): advanced indexing copies, before the in-place ReLU
            yx = where[name][slots].to(out.device).long()
            return out[torch.arange(len(out), device=out.device), :, yx[:, 0], yx[:, 1]]
        return out.detach().clone()

    def flush(lo, hi, batches):
        for a in arrays.values():
            a.flush()
        store.write_json(partial / f"slots-{lo}-{hi}.json", {"lo": lo, "hi": hi, "next": batches.next_slot,
                                                             "bad": batches.bad})

    todo = _pending(*span, _done(partial)[0])
    last = list(shapes)[-1]
    with torch.no_grad(), capture(model, sites, pick=pick, stop_after=last) as out, \
            tqdm(total=span[1] - span[0], initial=span[1] - span[0] - sum(b - a for a, b in todo),
                 desc="sample activations", unit="img", disable=rank()[0] != 0) as bar:
        for lo, hi in todo:
            batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad, start=lo,
                              stop=hi)
            t_flush, at = time.monotonic(), lo
            for x, _, slots in batches:
                forward_until(model, x.to(device, non_blocking=True))
                rows = slots.numpy()
                where_rows = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
                for name in shapes:
                    arrays[name][where_rows] = out[name].float().cpu().numpy()
                bar.update(batches.next_slot - at)
                at = batches.next_slot
                if time.monotonic() - t_flush > flush_seconds:
                    flush(lo, hi, batches)
                    t_flush = time.monotonic()
            batches.next_slot = hi
            flush(lo, hi, batches)


def _finish(b, indices, sites, seed) -> dict:
    """Check every slot is done, leave out the unreadable images' rows, write the locations, commit."""
    partial, n = b.partial, len(indices)
    shapes = {name: s.shape for name, s in sites.items()}
    done, bad = _done(partial)
    missing = _pending(0, n, done)
    if missing:
        raise RuntimeError(f"{partial} is unfinished: slots {missing[:3]} were not sampled; rerun {MADE_BY} "
                           "to resume.")
    positions = draw_positions(shapes, n, seed)
    kept = np.ones(n, bool)
    kept[[r["slot"] for r in bad]] = False
    files = []
    for name in shapes:
        if bad:  # a new file without the unreadable images' rows replaces the preallocated one
            _compact(partial / f"{name}.npy", kept)
        np.save(partial / f"{name}_loc.npy", np.column_stack([indices[kept], positions[name][kept]]).astype(np.int32))
        files += [f"{name}.npy", f"{name}_loc.npy"]
    for f in partial.glob("slots-*.json"):
        f.unlink()
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(bad), bad[0]["path"])
    described = {k: {"path": s.path, "kind": s.kind, "relu": s.relu} for k, s in sites.items()}
    return b.commit(files, extra={"shapes": {k: list(v) for k, v in shapes.items()}, "sites": described,
                                  "bad_images": bad})


def _compact(path, kept: np.ndarray, chunk: int = 1 << 16) -> None:
    """Replace the ``.npy`` at ``path`` by its rows where ``kept`` (a new file, renamed into place)."""
    old = np.load(path, mmap_mode="r")
    rows = np.flatnonzero(kept)
    with store.atomic(path) as tmp:
        new = store.new_array(tmp, (len(rows), *old.shape[1:]), old.dtype)
        for start in range(0, len(rows), chunk):
            new[start:start + chunk] = old[rows[start:start + chunk]]
        new.flush()
        del new
    del old


def open_sample(folder, layer: str, key: dict | None = None, made_by: str = MADE_BY):
    """Memory-map one layer's sample: ``(X, loc)`` of shapes (n, d) and (n, 3).

    ``key`` is the sample's expected key (see :mod:`helpers.pipeline.provenance`); a
    stale, missing or damaged sample raises with what to rerun.
    """
    meta = store.read_meta(folder, key, made_by)
    if layer not in meta["shapes"]:
        raise ValueError(
            f"layer={layer!r} is not in the sample at {folder} (it has {list(meta['shapes'])}); "
            "rerun 01_sample with that layer."
        )
    return store.open_array(folder, layer, made_by), store.open_array(folder, f"{layer}_loc", made_by)


def _cost(p, scale) -> costs.Cost:
    """Per layer an (n, d) float32 memory map and (n, 3) int32 locations; a batch of images and activations in
    memory (on the host: the loader's prefetched batches too); every sample image loaded and forwarded once."""
    n = scale.images["sample"]
    batch = min(p.batch_size, n) * int(np.prod(scale.input_shape)) * 4
    files = sum(costs.npy_bytes(n, scale.d(layer)) + costs.npy_bytes(n, 3) for layer in p.layers)
    return costs.Cost(disk=files, host=batch * (2 * p.num_workers + 1) + min(p.batch_size, n) * scale.forward_bytes,
                      device=scale.param_bytes + min(p.batch_size, n) * scale.forward_bytes, work={"images": n})


STEP = provenance.declare(
    __name__, "01_sample", "sample", key=sample_key, reads=("model",), build=make_sample, rank=sample_rank,
    settings=("dataset", "data_root", "model", "layers", "sample_split", "n_sample", "seed"),
    uses=("batch_size", "num_workers", "device", "skip_bad_images", *distributed.SETTINGS),
    cost=_cost)
