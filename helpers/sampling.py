"""Step 1 of the method: sample each layer's pre-ReLU activations.

One forward pass per batch captures every requested layer through forward
hooks (always removed). For a conv layer one spatial position per image is
kept, drawn from a seeded generator; for an fc layer the whole vector. The
vectors stream into ``<layer>.npy`` memory maps with their ``(image, y, x)`` in
``<layer>_loc.npy`` (``y = x = -1`` for fc layers); progress is recorded so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from . import store
from .data import loader
from .models import get_device, layer_paths

MADE_BY = "01_sample (python -m helpers.run --only 01)"


class _Stop(Exception):
    """Raised by the last hook to skip the rest of the network."""


@contextmanager
def capture(model, layers, pick=None, stop_after: str | None = None):
    """Record the outputs of named layers during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str
        Paper layer names (see ``models.LAYER_TABLE``).
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

    def hook_for(name):
        def hook(module, args, out):
            outputs[name] = pick(name, out)
            if name == stop_after:
                raise _Stop

        return hook

    try:
        for name, path in layer_paths(layers).items():
            handles.append(model.get_submodule(path).register_forward_hook(hook_for(name)))
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


@torch.no_grad()
def layer_shapes(model, example, layers) -> dict[str, tuple]:
    """Output shape of each layer for one input of shape (C, H, W), in execution order."""
    order = []
    with capture(model, layers, pick=lambda name, out: order.append(name) or out.shape[1:]) as out:
        model(example.unsqueeze(0))
    return {name: tuple(out[name]) for name in order}


def draw_positions(shapes: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """One seeded random ``(y, x)`` per image for each conv layer.

    Returns ``{layer: ndarray of shape (n, 2)}`` with ``-1`` for fc layers. The
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


def sample_activations(model, dataset, layers, folder, *, indices=None, seed: int = 0,
                       batch_size: int = 256, num_workers: int = 0, device=None,
                       tag: dict | None = None, profile: str = "", flush_seconds: float = 30.0) -> dict:
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
    tag : dict, optional
        Extra parameters recorded in the sidecar (model id, dataset, split);
        an existing artifact with other parameters is refused.

    Returns
    -------
    dict
        The sidecar. Files: ``<layer>.npy`` float32 of shape (n, d) and
        ``<layer>_loc.npy`` int32 of shape (n, 3) holding ``(image, y, x)``.

    Notes
    -----
    Memory: one batch of activations on the device and the host, plus the
    positions and locations (20 bytes per image per layer); the samples
    themselves go straight to disk, so a split of any size fits.
    """
    device = get_device(device)
    model = model.eval().to(device)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    n = len(indices)
    if n == 0:
        raise ValueError("no images to sample: the dataset or the selection (indices, n_sample) is empty.")
    shapes = layer_shapes(model, dataset[int(indices[0])][0].to(device), layers)
    params = {"layers": list(layers), "seed": seed, "n": n,
              "images": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest()[:16], **(tag or {})}
    try:
        return store.read_meta(folder, params, MADE_BY)
    except FileNotFoundError:
        pass
    partial, progress = store.begin(folder, params, MADE_BY)
    done = progress.get("rows_done", 0)
    positions = draw_positions(shapes, n, seed)
    mode = "r+" if done else "w+"
    arrays, where = {}, {}
    for name, shape in shapes.items():
        arrays[name] = np.lib.format.open_memmap(partial / f"{name}.npy", mode=mode,
                                                 dtype=np.float32, shape=(n, shape[0]))
        if not done:
            loc = np.column_stack([indices, positions[name]]).astype(np.int32)
            np.save(partial / f"{name}_loc.npy", loc)
        where[name] = torch.from_numpy(positions[name])

    rows = slice(0, 0)

    def pick(name, out):
        if out.ndim == 4:  # (B, C, H, W): advanced indexing copies, before the in-place ReLU
            yx = where[name][rows].to(out.device).long()
            return out[torch.arange(len(out), device=out.device), :, yx[:, 0], yx[:, 1]]
        return out.detach().clone()

    def flush():
        for a in arrays.values():
            a.flush()
        store.save_progress(partial, params, rows_done=done)

    batches = loader(dataset, indices[done:], batch_size, num_workers, device)
    last = list(shapes)[-1]
    t_flush = time.monotonic()
    with torch.no_grad(), capture(model, layers, pick=pick, stop_after=last) as out, \
            tqdm(total=n, initial=done, desc="sample activations", unit="img") as bar:
        for x, _ in batches:
            rows = slice(done, done + len(x))
            forward_until(model, x.to(device, non_blocking=True))
            for name in shapes:
                arrays[name][rows] = out[name].float().cpu().numpy()
            done = rows.stop
            bar.update(len(x))
            if time.monotonic() - t_flush > flush_seconds:
                flush()
                t_flush = time.monotonic()
    flush()
    del arrays
    files = [f"{name}{suffix}.npy" for name in shapes for suffix in ("", "_loc")]
    return store.commit(partial, folder, params, profile, "sample", files,
                        extra={"shapes": {k: list(v) for k, v in shapes.items()}})


def open_sample(folder, layer: str, params: dict | None = None):
    """Memory-map one layer's sample: ``(X, loc)`` of shapes (n, d) and (n, 3)."""
    meta = store.read_meta(folder, params, MADE_BY)
    if layer not in meta["shapes"]:
        raise ValueError(
            f"layer={layer!r} is not in the sample at {folder} (it has {list(meta['shapes'])}); "
            "rerun 01_sample with that layer."
        )
    return store.open_array(folder, layer), store.open_array(folder, f"{layer}_loc")
