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

from . import keys, store
from .batches import Batches
from .data import images_key
from .models import get_device, layer_paths

FIELDS = ("layer", "basis", "order", "n_ablated", "top1")
MADE_BY = "05_ablation (python -m helpers.run --only 05)"
SOURCES = ("ablation", "data", "batches")


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
                batch_size: int = 256, max_rows: int = 4096, device=None, num_workers: int = 0,
                skip_bad: bool = False, bad: list | None = None) -> list[dict]:
    """Top-1 accuracy for every setting of one layer, the prefix run once per batch.

    Parameters
    ----------
    components : dict
        ``{basis: ndarray of shape (d, d)}``, rows by descending variance.
    mean : ndarray of shape (d,)
    counts : list of int
    max_rows : int
        Most rows stacked into one suffix call (settings x batch).
    skip_bad, bad : bool, list
        Leave out unreadable images, appending their records to ``bad``.

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
    batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad)
    for x, y, _ in tqdm(batches, desc=f"ablate {layer}", leave=False):
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
    if bad is not None:
        bad.extend(batches.bad)
    if total == 0:
        raise ValueError(f"no readable eval image to measure accuracy on ({len(batches.bad)} skipped).")
    accuracy = dict(zip(unique, correct / total))
    return [{"layer": layer, "basis": b, "order": o, "n_ablated": n, "top1": float(accuracy[key[(b, o, n)]])}
            for b, o, n in todo]


def layer_counts(bases: dict, dense: bool) -> dict:
    """``{layer: [n, ...]}``: the count grid of each layer, with the 80 %/99 % counts of every basis.

    ``bases`` is ``{layer: {basis: fitted basis}}`` (``explained_variance_ratio_``).
    """
    from .bases import counts as variance_counts

    out = {}
    for layer, fitted in bases.items():
        d = len(next(iter(fitted.values())).components_)
        extra = [k for b in fitted.values() for k in variance_counts(b.explained_variance_ratio_)]
        out[layer] = count_grid(d, dense, extra=extra)
    return out


def ablation_key(layers, images: dict, model_id: str, bases_hash: str, *, dense: bool | None = None,
                 counts: dict | None = None) -> dict:
    """What the sweep is made from: the layers, the count grid, the eval images, the model, the bases."""
    grid = {"dense": bool(dense)} if counts is None else {"counts": {k: list(map(int, v)) for k, v in counts.items()}}
    return keys.key({"layers": list(layers), **grid}, {"model": model_id, "images": images, "bases": bases_hash},
                     SOURCES)


def sweep(model, dataset, layers, bases: dict, folder, *, counts: dict | None = None, dense: bool = False,
          indices=None, model_id: str = "unnamed", bases_hash: str = "unnamed", skip_bad: bool = False,
          profile: str = "", **kw) -> list[dict]:
    """:func:`sweep_layer` for every layer into ``<folder>/ablation.csv``; returns its rows for ``layers``.

    ``bases`` is ``{layer: {basis: fitted basis}}`` (``components_``, ``mean_``,
    ``explained_variance_ratio_``); ``counts`` ``{layer: [n, ...]}`` (default:
    :func:`layer_counts` with ``dense``). Each finished layer is saved as its
    own file in ``<folder>.partial/`` (written under a temporary name and
    renamed), so an interruption at any point loses no finished layer and a
    rerun resumes at the first unfinished one; ``ablation.csv`` is assembled,
    as a new file, when every layer is done.
    """
    folder = Path(folder)
    key = ablation_key(layers, images_key(dataset, indices), model_id, bases_hash,
                       dense=dense, counts=counts)
    counts = counts or layer_counts(bases, dense)
    with store.Build(folder, key, MADE_BY, profile=profile, skip_bad=skip_bad) as b:
        if not b.current:
            _sweep(b, model, dataset, layers, bases, counts, indices, skip_bad, kw)
    return [r for r in read_rows(folder / "ablation.csv") if r["layer"] in set(layers)]


def _sweep(b, model, dataset, layers, bases, counts, indices, skip_bad, kw) -> dict:
    done, bad = list(b.progress.get("layers_done", [])), list(b.progress.get("bad", []))
    for layer in tqdm(layers, desc="ablation sweep"):
        if layer in done:
            continue
        fitted = bases[layer]
        components = {basis: f.components_ for basis, f in fitted.items()}
        mean = next(iter(fitted.values())).mean_
        found = []
        rows = sweep_layer(model, dataset, layer, components, mean, counts[layer], indices=indices,
                           skip_bad=skip_bad, bad=found, **kw)
        if not bad:
            bad = found  # every layer reads the same images: record them once
        _write_rows(b.partial / f"{layer}.csv", rows)
        done.append(layer)
        b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done, bad=bad)
    rows = [r for layer in layers for r in read_rows(b.partial / f"{layer}.csv")]
    _write_rows(b.partial / "ablation.csv", rows)
    for layer in layers:
        (b.partial / f"{layer}.csv").unlink()
    return b.commit(["ablation.csv"], extra={"counts": {k: list(map(int, counts[k])) for k in layers},
                                             "bad_images": bad})


def _write_rows(path, rows) -> None:
    """Write rows as a CSV file under a temporary name, fsynced, then renamed into place."""
    with store.atomic(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return [{**r, "n_ablated": int(r["n_ablated"]), "top1": float(r["top1"])} for r in csv.DictReader(f)]
