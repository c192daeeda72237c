"""Completeness by ablation (Fig. 6): mean-ablate basis vectors at a layer, measure top-1.

Mean-ablation of a set S of basis vectors at a layer replaces the pre-ReLU
activation ``a`` (at every spatial position of a conv layer) by
``a - V_S V_Sᵀ (a - mean)``: the coefficients along S are set to those of the
mean. For the neuron basis this sets the neurons in S to their mean.

:func:`ablate` does it with a forward hook (always removed). :func:`sweep`
measures many settings cheaply: the network up to the layer (the prefix)
runs once per batch; only the rest (the suffix) runs per setting, several
settings stacked in one suffix call.
"""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import store
from .data import loader
from .models import get_device, layer_paths

FIELDS = ("layer", "basis", "order", "n_ablated", "top1")
MADE_BY = "05_ablation (python -m helpers.run --only 05)"


def project_out(a: torch.Tensor, V: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``a - ((a - mean) @ V.T) @ V`` along the channel axis (1) of (B, C) or (B, C, H, W).

    Always a new tensor; with no rows in ``V``, an exact copy of ``a``.
    """
    if len(V) == 0:
        return a.clone()
    if a.ndim == 4:
        flat = a.permute(0, 2, 3, 1)
        return project_out(flat.reshape(-1, a.shape[1]), V, mean).reshape(flat.shape).permute(0, 3, 1, 2)
    return a - ((a - mean) @ V.T) @ V


@contextmanager
def ablate(model, layer: str, V, mean):
    """Mean-ablate the rows of ``V`` (k, d) at ``layer``'s pre-ReLU output while inside.

    ``V`` holds orthonormal basis vectors (``components_[S]``), ``mean`` (d,)
    the sample mean; ``k = 0`` leaves the output unchanged.
    """
    module = model.get_submodule(layer_paths([layer])[layer])

    def hook(mod, args, out):
        if len(V) == 0:
            return None  # output unchanged, bit for bit
        v = torch.as_tensor(np.asarray(V), dtype=out.dtype, device=out.device).reshape(-1, out.shape[1])
        m = torch.as_tensor(np.asarray(mean), dtype=out.dtype, device=out.device)
        return project_out(out, v, m)

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def split(model, layer: str) -> tuple[nn.Sequential, nn.Sequential]:
    """``(prefix, suffix)`` with ``suffix(prefix(x)) == model(x)``; the prefix ends at the layer.

    Works for AlexNet-shaped models (``features``, ``avgpool``, ``classifier``),
    as torchvision's ``alexnet`` and ``mini_alexnet``.
    """
    if not all(hasattr(model, a) for a in ("features", "avgpool", "classifier")):
        raise ValueError(f"{type(model).__name__} is not AlexNet-shaped (features, avgpool, classifier); "
                         "the sweep cannot split it. Use ablate() with full forward passes instead.")
    part, i = layer_paths([layer])[layer].split(".")
    i = int(i) + 1
    head = [model.features, model.avgpool, nn.Flatten(1)]
    if part == "features":
        return model.features[:i], nn.Sequential(model.features[i:], model.avgpool, nn.Flatten(1),
                                                 model.classifier)
    return nn.Sequential(*head, model.classifier[:i]), model.classifier[i:]


def count_grid(d: int, dense: bool, extra=()) -> list[int]:
    """Numbers of ablated vectors to try.

    ``dense``: the paper's grid (every count for d <= 384, else every count up
    to 64 and then every 16). Otherwise every count up to 16, then about 8
    log-spaced counts, plus ``extra`` (the 80 %/99 % counts). ``d`` is always in.
    """
    if dense:
        counts = range(d + 1) if d <= 384 else [*range(65), *range(80, d + 1, 16)]
    else:
        counts = [*range(min(d, 16) + 1), *np.geomspace(16, d, 10).round().astype(int)[1:]]
    return sorted({int(c) for c in (*counts, *extra, d) if 0 <= c <= d})


def settings(components: dict, counts: list[int]) -> list[tuple]:
    """``(basis, order, n)`` for every basis, order and count (the rows of ``ablation.csv``)."""
    return [(basis, order, n) for basis in components for order in ("descending", "ascending") for n in counts]


@torch.no_grad()
def sweep_layer(model, dataset, layer: str, components: dict, mean, counts, *, indices=None,
                batch_size: int = 256, max_rows: int = 4096, device=None, num_workers: int = 0) -> list[dict]:
    """Top-1 accuracy for every setting of one layer, the prefix run once per batch.

    Parameters
    ----------
    components : dict
        ``{basis: ndarray of shape (d, d)}``, rows by descending variance.
    mean : ndarray of shape (d,)
    counts : list of int
    max_rows : int
        Most rows stacked into one suffix call (settings x batch).

    Returns
    -------
    list of dict with the keys of ``FIELDS``.
    """
    device = get_device(device)
    model = model.eval().to(device)
    prefix, suffix = split(model, layer)
    todo = settings(components, counts)
    d = len(np.asarray(next(iter(components.values()))))
    key = {t: "none" if t[2] == 0 else "all" if t[2] == d else t for t in todo}  # identical ablations
    unique = list(dict.fromkeys(key.values()))
    V = {b: torch.as_tensor(np.asarray(c), dtype=torch.float32, device=device) for b, c in components.items()}
    m = torch.as_tensor(np.asarray(mean), dtype=torch.float32, device=device)
    first = next(iter(V))

    def rows_of(k):
        if k == "none":
            return V[first][:0]
        if k == "all":
            return V[first]
        basis, order, n = k
        return V[basis][:n] if order == "descending" else V[basis][len(V[basis]) - n:]

    correct = np.zeros(len(unique), dtype=np.int64)
    total = 0
    batches = loader(dataset, indices, batch_size, num_workers, device)
    for x, y in tqdm(batches, desc=f"ablate {layer}", leave=False):
        a = prefix(x.to(device, non_blocking=True)).float()
        y = y.to(device)
        group = max(1, max_rows // len(a))
        for start in range(0, len(unique), group):
            chunk = unique[start:start + group]
            # each ablated copy is a new tensor: the suffix starts with an in-place ReLU
            logits = suffix(torch.cat([project_out(a, rows_of(k), m) for k in chunk]))
            hits = (logits.argmax(1).view(len(chunk), -1) == y).sum(1)
            correct[start:start + len(chunk)] += hits.cpu().numpy()
        total += len(a)
    accuracy = dict(zip(unique, correct / total))
    return [{"layer": layer, "basis": b, "order": o, "n_ablated": n, "top1": float(accuracy[key[(b, o, n)]])}
            for b, o, n in todo]


def sweep(model, dataset, layers, bases: dict, counts: dict, folder, *, indices=None, tag=None,
          profile: str = "", **kw) -> list[dict]:
    """:func:`sweep_layer` for every layer; rows stream into ``<folder>.partial/ablation.csv``.

    Layers finished before an interruption are not recomputed. ``bases`` is
    ``{layer: {basis: (components (d, d), mean (d,))}}``, ``counts`` ``{layer: [n, ...]}``.
    Returns all rows; the finished artifact is ``<folder>/ablation.csv``.
    """
    params = {"layers": list(layers), "counts": {k: list(map(int, v)) for k, v in counts.items()},
              "n": None if indices is None else len(indices), **(tag or {})}
    try:
        store.read_meta(folder, params, MADE_BY)
        return read_rows(Path(folder) / "ablation.csv")
    except FileNotFoundError:
        pass
    folder = Path(folder)
    partial, progress = store.begin(folder, params, MADE_BY)
    path = partial / "ablation.csv"
    done = progress.get("layers_done", [])
    kept = [r for r in read_rows(path) if r["layer"] in done] if path.exists() else []
    with open(path, "w", newline="") as f:  # rows of a layer cut off mid-write are dropped
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(kept)
    for layer in tqdm(layers, desc="ablation sweep"):
        if layer in done:
            continue
        components = {b: comp for b, (comp, _) in bases[layer].items()}
        mean = next(iter(bases[layer].values()))[1]
        rows = sweep_layer(model, dataset, layer, components, mean, counts[layer], indices=indices, **kw)
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        done.append(layer)
        store.save_progress(partial, params, layers_done=done)
    store.commit(partial, folder, params, profile, "ablation", ["ablation.csv"])
    return read_rows(folder / "ablation.csv")


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return [{**r, "n_ablated": int(r["n_ablated"]), "top1": float(r["top1"])} for r in csv.DictReader(f)]
