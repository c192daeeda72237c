"""The ablation sweep (Fig. 6): top-1 accuracy with the top (or bottom) vectors of each basis removed.

For every layer and basis, :func:`sweep_layer` measures every count of the grid
(:func:`count_grid`: the paper's on the paper profile, a coarser one elsewhere)
in both orders. The network is cut where its family says
(:func:`helpers.models.split`): the part before the layer (or before the
residual block / encoder layer that holds it) runs once per batch; only the
rest runs per setting, several settings stacked in one batch. A model whose
family has no stages runs full forward passes, settings stacked. :func:`sweep`
writes one layer at a time, so an interrupted sweep resumes at the first
unfinished layer.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..bases import fit as _bases  # the bases a sweep removes; importing it declares them
from ..images.batches import Batches
from ..images.common import images_key
from ..models import families, sites
from ..models import running
from ..models.running import get_device, memory_format, place
from ..models.inputs import selection
from ..models.loading import model_id
from ..models.registry import spec
from ..pipeline import costs, distributed, provenance, store
from . import text
from .removal import STACK_ROWS_DEFAULT, Removal, _checked, _site, _stacked, measured, stack_rows

log = logging.getLogger(__name__)


FIELDS = ("layer", "basis", "order", "n_ablated", "top1")


TEXT_FIELDS = (*FIELDS, "loss", "loss_increase")
"""A language model's rows: the next-token loss (nats per token) and its increase over the unablated network's."""


MADE_BY = "05_ablation (python -m helpers.run --only 05)"



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
    """``(basis, order, n)`` for every basis, order and count up to its number of vectors (``ablation.csv``)."""
    return [(basis, order, n) for basis, c in components.items() for order in ("descending", "ascending")
            for n in counts if n <= len(c.components_ if hasattr(c, "components_") else c)]


def _complete(c, d: int) -> bool:
    """Whether removing every vector of ``c`` removes the same as removing every PC: an orthonormal basis of d."""
    from ..bases._base import _Basis

    return isinstance(c, np.ndarray | _Basis) and len(c.components_ if hasattr(c, "components_") else c) == d


def sweep_layer(model, dataset, layer: str, components: dict, mean, counts, *, indices=None,
                **kw) -> list[dict]:
    """Top-1 accuracy for every setting of one layer (:func:`accuracies` of each distinct setting).

    Parameters
    ----------
    components : dict
        ``{basis: ndarray of shape (d, d)}`` (orthonormal rows by descending variance,
        removed around ``mean``) or ``{basis: fitted basis}`` (any basis, see :class:`Removal`).
    mean : ndarray of shape (d,)
    counts : list of int
        Numbers of removed vectors; each basis takes those up to its number of vectors.
    **kw
        Passed to :func:`accuracies` (``batch_size``, ``max_rows``, ``device``, ``skip_bad``, ``bad`` ...).

    Returns
    -------
    list of dict with the keys of ``FIELDS``.
    """
    todo = settings(components, counts)
    d = len(np.asarray(mean))
    complete = {b for b, c in components.items() if _complete(c, d)}
    key = {t: "none" if t[2] == 0 else "all" if t[2] == d and t[0] in complete else t
           for t in todo}  # identical ablations
    unique = list(dict.fromkeys(key.values()))
    first = next(iter(complete or components))

    caches = {basis: {} for basis in components}

    def removal(basis, which):
        c = components[basis]
        return (Removal(c, which, caches[basis]) if hasattr(c, "components_")
                else Removal.orthonormal(np.asarray(c)[which], mean))

    def rows_of(k):
        if k == "none":
            return removal(first, [])
        if k == "all":
            return removal(first, np.arange(d))
        basis, order, n = k
        K = len(components[basis].components_ if hasattr(components[basis], "components_") else components[basis])
        return removal(basis, np.arange(n) if order == "descending" else np.arange(K - n, K))

    top1 = accuracies(model, dataset, layer, [rows_of(k) for k in unique], mean, indices=indices, **kw)
    accuracy = dict(zip(unique, top1))
    return [{"layer": layer, "basis": b, "order": o, "n_ablated": n, "top1": float(accuracy[key[(b, o, n)]])}
            for b, o, n in todo]


@torch.no_grad()
def accuracies(model, dataset, layer: str, ablations: list, mean, *, indices=None, batch_size: int = 256,
               max_rows: int | None = None, device=None, num_workers: int = 0, skip_bad: bool = False,
               bad: list | None = None, desc: str | None = None, precision: str = "fp32") -> np.ndarray:
    """Top-1 accuracy with each set of vectors mean-ablated at ``layer``, the part before it run once per batch.

    Parameters
    ----------
    ablations : list of Removal or ndarray of shape (k, d)
        One per setting: a :class:`Removal`, or orthonormal rows removed around
        ``mean`` (``k = 0``: unablated).
    mean : ndarray of shape (d,)
    max_rows : int, optional
        Most images stacked into one suffix call (settings x batch); default
        :func:`stack_rows` of the device (on CUDA: sized from the memory one
        call was measured to take).
    skip_bad, bad : bool, list
        Leave out unreadable images, appending their records to ``bad``.
    precision : {"fp32", "tf32", "bf16"}
        Arithmetic of the forward passes (:func:`helpers.models.running.precision`).

    Returns
    -------
    ndarray of shape (len(ablations),): top-1 accuracy of each setting.

    Notes
    -----
    Inside a process group (a rank of :func:`sweep` with ``ranks``) each rank
    forwards its :func:`~helpers.pipeline.distributed.shard` of the images and
    the hits are summed over the ranks (integers: the accuracies are exactly
    those of one process).
    The hits are counted on the device and read once at the end (no host sync
    per stacked call); the suffix gets its input in the model's memory format.
    Memory: one batch's prefix output, one stack of ``max_rows`` images through
    the suffix, and each setting's removal tensors (:meth:`Removal._tensors`).
    """
    device = get_device(device)
    model = place(model, device)
    fmt = memory_format(device)
    site = _site(model, layer)
    cut = sites.split(model, site.path)
    if cut is None:
        log.info("%s: %s has no described stages; full forward passes with the settings stacked in the batch",
                 layer, type(model).__name__)
        cut = (lambda x: x), model, False
    prefix, suffix, at_cut = cut
    module = model.get_submodule(site.path)
    V = [v if isinstance(v, Removal) else Removal.orthonormal(v, mean) for v in ablations]
    correct = torch.zeros(len(V), dtype=torch.long, device=device)
    total = 0
    rows = max_rows
    lo, hi = distributed.shard(len(dataset) if indices is None else len(indices), batch_size)
    batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad, start=lo, stop=hi)
    checked = False
    with running.precision(precision, device):
        for x, y, _ in tqdm(batches, desc=desc or f"ablate {layer}", leave=False,
                            disable=distributed.rank()[0] != 0):
            x = x.to(device, non_blocking=True)
            if not checked:  # the cut must compose to the model's own output, else full forward passes
                prefix, suffix, at_cut = _checked(model, layer, x, prefix, suffix, at_cut)
                checked = True
            h = prefix(x)
            y = y.to(device, non_blocking=True)
            start = 0
            while start < len(V):
                group = max(1, (rows or stack_rows(device)) // len(h))
                chunk = V[start:start + group]

                def fn(r, g, dest, chunk=chunk):
                    return chunk[g](r, dest)

                with measured(device, rows is None) as peak:
                    if at_cut:  # the settings' rows are written from the prefix's output, no stacked copy of it
                        logits = suffix(site.apply(h, fn, len(chunk), shared=True, memory_format=fmt))
                    else:  # a new tensor per setting: the suffix may start with an in-place ReLU
                        with _stacked(module, site, fn, len(chunk), fmt):
                            logits = suffix(torch.cat([h] * len(chunk)))
                    correct[start:start + len(chunk)] += (logits.argmax(1).view(len(chunk), -1) == y).sum(1)
                if peak.bytes:  # the first call on a GPU: size the stacks from the memory it took
                    rows = stack_rows(device, per_image=peak.bytes / (len(chunk) * len(h)))
                    log.info("%s: %d images per stacked call on %s", layer, rows, device)
                start += len(chunk)
            total += len(h)
    total = int(distributed.all_sum(torch.tensor([total], device=device)).item())
    distributed.all_sum(correct)
    if bad is not None:
        bad.extend(r for found in distributed.gather(batches.bad) for r in found)
    if total == 0:
        raise ValueError(f"no readable eval image to measure accuracy on ({len(batches.bad)} skipped).")
    return correct.cpu().numpy() / total


def layer_counts(bases: dict, dense: bool) -> dict:
    """``{layer: [n, ...]}``: the count grid of each layer, with the 80 %/99 % counts of every basis.

    ``bases`` is ``{layer: {basis: fitted basis}}`` (``explained_variance_ratio_``).
    """
    from ..bases.curves import counts as variance_counts

    out = {}
    for layer, fitted in bases.items():
        d = len(next(iter(fitted.values())).mean_)
        grid = set(count_grid(d, dense, extra=[k for b in fitted.values()
                                                for k in variance_counts(b.explained_variance_ratio_)
                                                if k is not None and k <= d]))
        for b in fitted.values():  # bases of another size: up to their own number of vectors
            K = len(b.components_)
            grid |= {K} | ({c for c in count_grid(K, dense) if c > d} if K > d else set())
        out[layer] = sorted(grid)
    return out


def ablation_key(p) -> dict:
    """What profile ``p``'s sweep is made from: the layers, the count grid, the arithmetic (when not float32), the
    eval images of the sweep, the model, the bases.

    The one key of the ablation step: the driver (:func:`make_ablation`), each rank and provenance call it.
    """
    grid = {"dense": bool(p.ablation_dense), **({} if p.precision == "fp32" else {"precision": p.precision})}
    return provenance.key(__name__, {"layers": list(p.layers), **grid},
                          {"model": model_id(p), "images": images_key(*selection(p, "ablation")),
                           "bases": provenance.require(p, "bases")["hash"]})


def make_ablation(p, ranks=None) -> list[dict]:
    """The ablation step for profile ``p`` (reused when current); returns the rows of ``ablation.csv``.

    ``ranks``: default the profile's (:func:`helpers.pipeline.distributed.ranks`).
    """
    from ..models.loading import load_model

    key = ablation_key(p)  # refuses stale bases
    model, _ = load_model(p, train=False)
    dataset, indices = selection(p, "ablation")
    fitted = {layer: _bases.layer_bases(p.artifact("bases"), layer, p.bases) for layer in p.layers}
    return sweep(model, dataset, p.layers, fitted, p.artifact("ablation"), key, dense=p.ablation_dense,
                 indices=indices, skip_bad=p.skip_bad_images, profile=p.name, precision=p.precision,
                 batch_size=p.batch_size, num_workers=p.num_workers, device=p.device,
                 ranks=distributed.ranks(p) if ranks is None else ranks)


def sweep(model, dataset, layers, bases: dict, folder, key: dict, *, counts: dict | None = None,
          dense: bool = False, indices=None, skip_bad: bool = False, profile: str = "", precision: str = "fp32",
          ranks=None, **kw) -> list[dict]:
    """:func:`sweep_layer` for every layer into ``<folder>/ablation.csv``; returns its rows for ``layers``.

    ``key``: the artifact's key (:func:`ablation_key` for a profile); ``kw``: :func:`sweep_layer`'s
    ``batch_size``, ``num_workers``, ``device``.
    ``bases`` is ``{layer: {basis: fitted basis}}`` (``components_``, ``mean_``,
    ``explained_variance_ratio_``); ``counts`` ``{layer: [n, ...]}`` (default:
    :func:`layer_counts` with ``dense``). Each finished layer is saved as its
    own file in ``<folder>.partial/`` (written under a temporary name and
    renamed), so an interruption at any point loses no finished layer and a
    rerun resumes at the first unfinished one; ``ablation.csv`` is assembled,
    as a new file, when every layer is done.

    ``ranks`` (:class:`helpers.pipeline.distributed.Ranks`): with more than one
    process, every setting's hits are counted by each rank on its shard of the
    eval images and summed (``all_reduce``); each rank rebuilds the model, images
    and bases from the profile ``ranks.p`` and stops unless its :func:`ablation_key`
    is ``key``. The CSV is that of one process.
    """
    folder = Path(folder)
    kw = {**kw, "precision": precision}
    counts = counts or layer_counts(bases, dense)
    many = ranks is not None and ranks.distributed
    if many and not ranks.main:
        ranks.follow(sweep_rank, folder, key, MADE_BY, key=key, folder=str(folder),
                     layers=list(layers), counts={k: list(map(int, v)) for k, v in counts.items()})
    else:
        with store.Build(folder, key, MADE_BY, profile=profile, skip_bad=skip_bad) as b:
            if not b.current:
                if many:
                    ranks.launch(sweep_rank, key=key, folder=str(folder),
                                 layers=list(layers), counts={k: list(map(int, v)) for k, v in counts.items()})
                    b.reload_progress()
                else:
                    _sweep_layers(b, model, dataset, layers, bases, counts, indices, skip_bad, kw)
                _assemble(b, layers, counts)
    return [r for r in read_rows(folder / "ablation.csv") if r["layer"] in set(layers)]


def sweep_rank(p, key: dict, folder: str, layers: list, counts: dict) -> None:
    """One rank of a distributed :func:`sweep`: the profile's model, ablation images and bases, its shard.

    Rank 0 writes each finished layer and the progress; a rank that rebuilds
    another key than the driver's (``key``) stops with the difference.
    """
    from ..models.loading import load_model

    distributed.same_key(ablation_key(p), key, "sweep")
    device = distributed.device(p.device)
    model, _ = load_model(p, train=False)
    dataset, indices = selection(p, "ablation")
    fitted = {layer: _bases.layer_bases(p.artifact("bases"), layer, p.bases) for layer in layers}
    b = store.Build(folder, key, MADE_BY, profile=p.name)  # the driver holds the lock and opened the partial
    b.reload_progress()
    kw = {"batch_size": p.batch_size, "num_workers": p.num_workers, "device": device, "precision": p.precision}
    _sweep_layers(b, model, dataset, layers, fitted, counts, indices, p.skip_bad_images, kw,
                  write=distributed.rank()[0] == 0)


def _sweep_layers(b, model, dataset, layers, bases, counts, indices, skip_bad, kw, write: bool = True) -> None:
    """Each layer not yet done into ``<partial>/<layer>.csv`` (``write``: this process records it)."""
    done, bad = list(b.progress.get("layers_done", [])), list(b.progress.get("bad", []))
    for layer in tqdm(layers, desc="ablation sweep", disable=not write):
        if layer in done:
            continue
        fitted = bases[layer]
        mean = fitted["pca"].mean_ if "pca" in fitted else next(iter(fitted.values())).mean_
        found = []
        if families.family_of(model).task == "next_token":  # a language model: next-token top-1 and loss
            rows = text.sweep_layer(model, dataset, layer, fitted, counts[layer], indices=indices, **kw)
        else:
            rows = sweep_layer(model, dataset, layer, fitted, mean, counts[layer], indices=indices,
                               skip_bad=skip_bad, bad=found, **kw)
        if not bad:
            bad = sorted(found, key=lambda r: r["slot"])  # every layer reads the same images: record them once
        done.append(layer)
        if write:
            _write_rows(b.partial / f"{layer}.csv", rows)
            b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done, bad=bad)


def _assemble(b, layers, counts) -> dict:
    """``ablation.csv`` from the finished layers, committed."""
    bad = list(b.progress.get("bad", []))
    missing = [layer for layer in layers if layer not in b.progress.get("layers_done", [])]
    if missing:
        raise RuntimeError(f"{b.partial} is unfinished: layers {missing} were not swept; rerun {MADE_BY} to resume.")
    rows = [r for layer in layers for r in read_rows(b.partial / f"{layer}.csv")]
    _write_rows(b.partial / "ablation.csv", rows)
    for layer in layers:
        (b.partial / f"{layer}.csv").unlink()
    return b.commit(["ablation.csv"], extra={"counts": {k: list(map(int, counts[k])) for k in layers},
                                             "bad_images": bad})


def _write_rows(path, rows) -> None:
    store.write_csv(path, TEXT_FIELDS if rows and "loss" in rows[0] else FIELDS, rows)


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return [{**r, "n_ablated": int(r["n_ablated"]), "top1": float(r["top1"]),
                 **{k: float(r[k]) for k in ("loss", "loss_increase") if k in r}} for r in csv.DictReader(f)]


def _cost(p, scale) -> costs.Cost:
    """A CSV row per setting (every basis, both orders, each count of the grid; per layer while it runs); the
    rest of the network run for every setting on every sweep image: an upper bound of full forward passes.
    Memory: a stack of images through the suffix (on CUDA sized to at most half the free memory)."""
    from ..bases.kinds import vectors

    n = scale.images["ablation"]
    rows = 0
    for layer in p.layers:
        for k in vectors(p, scale, layer).values():
            rows += 2 * len(count_grid(k, p.ablation_dense))
    stack = STACK_ROWS_DEFAULT if p.device is None or "cuda" in str(p.device) else stack_rows(p.device)
    return costs.Cost(disk=rows * 44 + 4096, host=min(p.batch_size, n) * scale.forward_bytes,
                      device=scale.param_bytes + stack * scale.forward_bytes, work={"forwards": rows * n})


STEP = provenance.declare(
    __name__, "05_ablation", "ablation", key=ablation_key, reads=("model", "bases"), build=make_ablation,
    rank=sweep_rank,
    settings=("model", "layers", "eval_split", "n_eval", "ablation_eval", "ablation_dense", "precision", "seed"),
    uses=("bases", "batch_size", "num_workers", "device", "skip_bad_images", *distributed.SETTINGS),
    outputs=(provenance.Output("fig06_ablation", caption="Fig. 6 · accuracy under ablation"),
             provenance.Output("fig06_ablation_loss", caption="Fig. 6 · next-token loss under ablation (language models)",
                               when=lambda p: spec(p.model).text),
             provenance.Output("ablation.csv", gather="ablation"),
             provenance.Output("ablation_vs_published.csv", when=lambda p: p.published)),
    cost=_cost)
