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

import numpy as np
import torch
from tqdm.auto import tqdm

from .images.batches import Batches
from .images.common import example, images_key
from .models.running import get_device, place
from .models.sites import sites as layer_sites
from .models.inputs import selection
from .models.loading import model_id
from .pipeline import keys, provenance, store

log = logging.getLogger(__name__)


MADE_BY = "01_sample (python -m helpers.run --only 01)"


SOURCES = ("sampling", "models/registry", "models/loading", "models/families", "models/sites", "models/inputs", "images/common", "images/fashion", "images/folders", "images/batches")


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
            outputs[name] = pick(name, site.read(out))
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


def sample_key(layers, seed: int, images: dict, model_id: str) -> dict:
    """What a sample is made from: layers, seed, which images, which model, this code."""
    return keys.key({"layers": list(layers), "seed": int(seed)}, {"model": model_id, "images": images}, SOURCES)


def sample_activations(model, dataset, layers, folder, *, indices=None, seed: int = 0,
                       model_id: str = "unnamed", skip_bad: bool = False, batch_size: int = 256,
                       num_workers: int = 0, device=None, profile: str = "",
                       flush_seconds: float = 30.0) -> dict:
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
    seed : int
        Seeds the spatial positions.
    model_id : str
        Identifies the weights (``models.load_model``'s ``info["id"]``); a
        sample of other weights, images, layers or seed is not reused.
    skip_bad : bool
        Leave out unreadable images (listed in the sidecar's ``bad_images``)
        instead of stopping at the first.

    Returns
    -------
    dict
        The sidecar. Files: ``<layer>.npy`` float32 of shape (n, d) and
        ``<layer>_loc.npy`` int32 of shape (n, 3) holding ``(image, y, x)``.

    Notes
    -----
    Memory: one batch of activations on the device and the host, plus the
    positions (20 bytes per image per layer); the samples themselves go
    straight to disk (space reserved up front), so a split of any size fits.
    An interrupted run resumes at the first image not recorded as done;
    finished rows are never rewritten.
    """
    device = get_device(device)
    model = place(model, device)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    n = len(indices)
    if n == 0:
        raise ValueError("no images to sample: the dataset or the selection (indices, n_sample) is empty.")
    sites = layer_sites(model, layers, example(dataset, indices).to(device))
    key = sample_key(layers, seed, images_key(dataset, indices), model_id)
    with store.Build(folder, key, MADE_BY, profile=profile, skip_bad=skip_bad) as b:
        if b.current:
            return b.meta
        return _sample(b, model, dataset, indices, sites, seed, skip_bad, batch_size, num_workers,
                       device, flush_seconds)


def _sample(b, model, dataset, indices, sites, seed, skip_bad, batch_size, num_workers, device,
            flush_seconds) -> dict:
    n, partial = len(indices), b.partial
    shapes = {name: s.shape for name, s in sites.items()}
    slots_done, rows = b.progress.get("slots_done", 0), b.progress.get("rows_done", 0)
    earlier = list(b.progress.get("bad", []))  # unreadable images found before an interruption
    positions = draw_positions(shapes, n, seed)
    arrays = {}
    for name, shape in shapes.items():
        path = partial / f"{name}.npy"
        arrays[name] = (np.load(path, mmap_mode="r+") if slots_done else
                        store.new_array(path, (n, shape[0]), np.float32))
    where = {name: torch.from_numpy(positions[name]) for name in shapes}
    slots = torch.zeros(0, dtype=torch.long)

    def pick(name, out):
        if out.ndim == 4:  # (B, C, H, W): advanced indexing copies, before the in-place ReLU
            yx = where[name][slots].to(out.device).long()
            return out[torch.arange(len(out), device=out.device), :, yx[:, 0], yx[:, 1]]
        return out.detach().clone()

    def flush():
        for a in arrays.values():
            a.flush()
        b.save_progress(summary=f"{slots_done} of {n} images", slots_done=slots_done, rows_done=rows,
                        bad=earlier + batches.bad)

    batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad, start=slots_done)
    last = list(shapes)[-1]
    t_flush = time.monotonic()
    with torch.no_grad(), capture(model, sites, pick=pick, stop_after=last) as out, \
            tqdm(total=n, initial=slots_done, desc="sample activations", unit="img") as bar:
        for x, _, slots in batches:
            forward_until(model, x.to(device, non_blocking=True))
            for name in shapes:
                arrays[name][rows:rows + len(x)] = out[name].float().cpu().numpy()
            rows += len(x)
            bar.update(batches.next_slot - slots_done)
            slots_done = batches.next_slot
            if time.monotonic() - t_flush > flush_seconds:
                flush()
                t_flush = time.monotonic()
    slots_done, bad = n, earlier + batches.bad
    flush()
    arrays.clear()  # closes the memory maps
    kept = ~np.isin(indices, [r["index"] for r in bad])
    files = []
    for name in shapes:
        if rows < n:  # images were skipped: a new, shorter file replaces the preallocated one
            _shorten(partial / f"{name}.npy", rows)
        np.save(partial / f"{name}_loc.npy", np.column_stack([indices[kept], positions[name][kept]]).astype(np.int32))
        files += [f"{name}.npy", f"{name}_loc.npy"]
    if bad:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(bad), bad[0]["path"])
    described = {k: {"path": s.path, "kind": s.kind, "relu": s.relu} for k, s in sites.items()}
    return b.commit(files, extra={"shapes": {k: list(v) for k, v in shapes.items()}, "sites": described,
                                  "bad_images": bad})


def _shorten(path, rows: int, chunk: int = 1 << 16) -> None:
    """Replace the ``.npy`` at ``path`` by its first ``rows`` rows (a new file, renamed into place)."""
    old = np.load(path, mmap_mode="r")
    with store.atomic(path) as tmp:
        new = store.new_array(tmp, (rows, *old.shape[1:]), old.dtype)
        for start in range(0, rows, chunk):
            new[start:start + chunk] = old[start:min(start + chunk, rows)]
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


def _key(p) -> dict:
    return sample_key(p.layers, p.seed, images_key(*selection(p, "sample")), model_id(p))


provenance.register("sample", _key, upstream=("model",))
