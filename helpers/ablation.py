"""Completeness by ablation (Fig. 6): mean-ablate basis vectors at a layer, measure top-1.

Mean-ablation of a set S of basis vectors at a layer replaces the layer's
output ``a`` (its module's own output: pre-ReLU; at every position of a map
and every token of a ViT, the class token too) by ``a - V_S V_Sᵀ (a - mean)``:
the coefficients along S are set to those of the mean. For the neuron basis
this sets the neurons in S to their mean.

Any basis (:class:`Removal`): ``a - (z_S(a) - b_S) W_S`` with its codes ``z``,
its unit directions ``W`` and ``b`` its ``baseline_``: the codes' mean for
PCA, neurons, ICA and NMF (whose codes are those of ``relu(a)``, removed
before the ReLU that follows), zero for the SAE — its reconstruction with
those latents zeroed plus its reconstruction error. Removing nothing leaves
``a`` exactly.

:func:`ablate` does it with a forward hook (always removed). :func:`sweep`
measures many settings cheaply. The network is cut where its family says
(:func:`helpers.architectures.split`): the part before the layer (or before
the residual block / encoder layer that holds it) runs once per batch; only
the rest runs per setting, several settings stacked in one batch. A model
whose family has no stages runs full forward passes, settings stacked.
"""
from __future__ import annotations

import csv
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import architectures, keys, store
from .batches import Batches
from .data import images_key
from .models import get_device, place

log = logging.getLogger(__name__)
FIELDS = ("layer", "basis", "order", "n_ablated", "top1")
MADE_BY = "05_ablation (python -m helpers.run --only 05)"
SOURCES = ("ablation", "architectures", "data", "batches")


class Removal:
    """Remove the vectors ``which`` of a fitted basis from activation rows: ``a - (z_S(a) - b_S) W_S``.

    Parameters
    ----------
    basis : fitted basis
        ``components_`` (K, d), ``baseline_`` (K,; zeros if absent) and either a
        linear ``encoder_`` (K, d) with ``mean_`` (PCA, neurons, ICA; orthonormal rows
        without ``encoder_`` are their own) or ``encode`` (NMF, SAE: their codes are
        computed in full, then the columns of S taken).
    which : sequence of int
        Indices of the removed vectors.
    cache : dict, optional
        Shared by the removals of one basis in a sweep: a nonlinear encoder's
        codes of the last rows seen, reused while the rows are equal (every
        setting of a batch removes from the same activations), so NMF's solver
        and the SAE's encoder run once per batch, not once per setting.

    Calling it on rows (m, d) returns new rows; with nothing to remove, an exact copy.
    """

    def __init__(self, basis, which, cache: dict | None = None):
        which = np.asarray(which, dtype=np.int64).reshape(-1)
        self.basis, self.which, self.codes = basis, which, {} if cache is None else cache
        self.linear = hasattr(basis, "encoder_") or not hasattr(basis, "encode")
        W = np.asarray(basis.components_, np.float64)[which]
        baseline = getattr(basis, "baseline_", None)
        b = np.zeros(len(which)) if baseline is None else np.asarray(baseline, np.float64)[which]
        self._arrays, self.form = {"W": W, "b": b}, "codes"
        if self.linear and len(which):  # orthonormal rows without an encoder_ are their own encoder
            E = np.asarray(getattr(basis, "encoder_", basis.components_), np.float64)[which]
            mean = np.asarray(basis.mean_, np.float64)
            offset = -(E @ mean + b)  # z - b = rows @ E.T + offset
            d = W.shape[1]
            cols = np.abs(W).argmax(1)
            if np.array_equal(E, W) and np.array_equal(np.abs(W), np.eye(d)[cols]) and len(set(cols)) == len(cols):  # neurons: set to their mean
                keep, fill = np.ones(d), np.zeros(d)
                keep[cols], fill[cols] = 0, mean[cols] + b * W[np.arange(len(cols)), cols]
                self.form, self._arrays = "columns", {"keep": keep, "fill": fill}
            elif 2 * len(which) >= d:  # one d x d product: rows @ (I - E.T W) + (mean E.T + b) W
                self.form, self._arrays = "dense", {"M": np.eye(d) - E.T @ W, "c": -offset @ W}
            else:  # two thin products
                self.form, self._arrays = "low_rank", {"E_T": np.ascontiguousarray(E.T), "offset": offset, "W": W}
        self._cache = {}

    @classmethod
    def orthonormal(cls, V, mean) -> "Removal":
        """The removal of orthonormal rows ``V`` (k, d) around ``mean`` (d,): ``a - ((a - mean) V_Sᵀ) V_S``."""
        V = np.asarray(V).reshape(-1, np.asarray(mean).shape[-1])
        return cls(_Rows(V, mean), np.arange(len(V)))

    def __len__(self) -> int:
        return len(self.which)

    def _tensors(self, rows) -> dict:
        where = (rows.device, rows.dtype)
        if where not in self._cache:
            self._cache[where] = {k: torch.as_tensor(np.asarray(v), device=rows.device,
                                                     dtype=torch.long if k == "which" else rows.dtype)
                                  for k, v in {**self._arrays, "which": self.which}.items()}
        return self._cache[where]

    def __call__(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """New rows (m, d) for ``rows`` (m, d), written into ``out`` when given (a new tensor otherwise).

        Linear bases take one of three equal forms (chosen once): neurons set
        their columns to the mean (``rows * keep + fill``); ``2k >= d`` vectors one ``d x d`` product
        ``rows (I - EᵀW) + (mean Eᵀ + b) W``; fewer, two thin products.
        """
        if out is None:
            out = torch.empty_like(rows, memory_format=torch.contiguous_format)
        if len(self) == 0:
            return out.copy_(rows)
        t = self._tensors(rows)
        if self.form == "columns":  # rows * 1 + 0 and rows * 0 + mean: exact
            return torch.addcmul(t["fill"], rows, t["keep"], out=out)
        if self.form == "dense":
            return torch.addmm(t["c"], rows, t["M"], out=out)
        if self.form == "low_rank":
            z = torch.addmm(t["offset"], rows, t["E_T"])
        else:
            z = self._encoded(rows)[:, t["which"]] - t["b"]
        return torch.addmm(rows, z, t["W"], alpha=-1, out=out)

    def _encoded(self, rows):
        last = self.codes.get("rows")
        if last is None or last.shape != rows.shape or last.dtype != rows.dtype or not torch.equal(last, rows):
            self.codes.update(rows=rows.clone(), codes=self.basis.encode(rows))
        return self.codes["codes"]


class _Rows:
    """Orthonormal rows seen as a basis (for :meth:`Removal.orthonormal`)."""

    def __init__(self, V, mean):
        self.components_ = self.encoder_ = np.asarray(V)
        self.mean_, self.baseline_ = np.asarray(mean), np.zeros(len(V))


def _site(model, layer: str) -> architectures.Site:
    """A site to write through (the output format is read from the output itself)."""
    path = architectures.resolve(model, [layer])[layer]
    return architectures.Site(layer, path, "any", ())


@contextmanager
def ablate(model, layer: str, V, mean=None):
    """Mean-ablate the rows of ``V`` (k, d) at ``layer``'s output while inside.

    ``V`` holds orthonormal basis vectors (``components_[S]``) and ``mean`` (d,)
    the sample mean, or ``V`` is a :class:`Removal` (any basis; ``mean`` unused);
    removing nothing leaves the output unchanged, bit for bit.
    """
    site = _site(model, layer)
    module = model.get_submodule(site.path)
    removal = V if isinstance(V, Removal) else Removal.orthonormal(V, mean)

    def hook(mod, args, out):
        if len(removal) == 0:
            return None  # output unchanged, bit for bit
        return site.apply(out, lambda rows, g, dest: removal(rows, dest))

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


@contextmanager
def _stacked(module, site, fn, groups: int):
    """While inside, ``module``'s output (``groups`` settings stacked in its batch) goes through ``fn``."""
    handle = module.register_forward_hook(lambda m, a, out: site.apply(out, fn, groups))
    try:
        yield
    finally:
        handle.remove()


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
    from .bases import _Basis

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


STACK_ROWS = {"cpu": 512}
"""Images per suffix call by device type. On the 2-core CPU the stand-ins' sweep ran fastest with small
stacks (conv1 of mini_alexnet: 512 rows 2.7 s, 1,024 4.1 s, 4,096 5.0 s for the same settings): the
stack should stay in the caches. Elsewhere :data:`STACK_ROWS_DEFAULT`."""
STACK_ROWS_DEFAULT = 2048


def stack_rows(device) -> int:
    """The number of images (settings x batch) the sweep stacks into one call on ``device``."""
    return STACK_ROWS.get(torch.device(device).type, STACK_ROWS_DEFAULT)


@torch.no_grad()
def accuracies(model, dataset, layer: str, ablations: list, mean, *, indices=None, batch_size: int = 256,
               max_rows: int | None = None, device=None, num_workers: int = 0, skip_bad: bool = False,
               bad: list | None = None, desc: str | None = None) -> np.ndarray:
    """Top-1 accuracy with each set of vectors mean-ablated at ``layer``, the part before it run once per batch.

    Parameters
    ----------
    ablations : list of Removal or ndarray of shape (k, d)
        One per setting: a :class:`Removal`, or orthonormal rows removed around
        ``mean`` (``k = 0``: unablated).
    mean : ndarray of shape (d,)
    max_rows : int, optional
        Most images stacked into one suffix call (settings x batch); default
        :func:`stack_rows` of the device.
    skip_bad, bad : bool, list
        Leave out unreadable images, appending their records to ``bad``.

    Returns
    -------
    ndarray of shape (len(ablations),): top-1 accuracy of each setting.
    """
    device = get_device(device)
    model = place(model, device)
    site = _site(model, layer)
    cut = architectures.split(model, site.path)
    if cut is None:
        log.info("%s: %s has no described stages; full forward passes with the settings stacked in the batch",
                 layer, type(model).__name__)
        cut = (lambda x: x), model, False
    prefix, suffix, at_cut = cut
    module = model.get_submodule(site.path)
    V = [v if isinstance(v, Removal) else Removal.orthonormal(v, mean) for v in ablations]
    correct = np.zeros(len(V), dtype=np.int64)
    total = 0
    batches = Batches(dataset, indices, batch_size, num_workers, device, skip_bad=skip_bad)
    checked = False
    for x, y, _ in tqdm(batches, desc=desc or f"ablate {layer}", leave=False):
        x = x.to(device, non_blocking=True)
        if not checked:  # the cut must compose to the model's own output, else full forward passes
            prefix, suffix, at_cut = _checked(model, layer, x, prefix, suffix, at_cut)
            checked = True
        h = prefix(x)
        y = y.to(device)
        group = max(1, (max_rows or stack_rows(device)) // len(h))
        for start in range(0, len(V), group):
            chunk = V[start:start + group]

            def fn(rows, g, dest, chunk=chunk):
                return chunk[g](rows, dest)

            if at_cut:  # the settings' rows are written from the prefix's output, with no stacked copy of it
                logits = suffix(site.apply(h, fn, len(chunk), shared=True))
            else:  # a new tensor per setting: the suffix may start with an in-place ReLU
                with _stacked(module, site, fn, len(chunk)):
                    logits = suffix(torch.cat([h] * len(chunk)))
            hits = (logits.argmax(1).view(len(chunk), -1) == y).sum(1)
            correct[start:start + len(chunk)] += hits.cpu().numpy()
        total += len(h)
    if bad is not None:
        bad.extend(batches.bad)
    if total == 0:
        raise ValueError(f"no readable eval image to measure accuracy on ({len(batches.bad)} skipped).")
    return correct / total


def _checked(model, layer, x, prefix, suffix, at_cut):
    """``(prefix, suffix, at_cut)``, or full forward passes when ``suffix(prefix(x))`` is not ``model(x)``."""
    full = model(x)
    try:
        cut = suffix(prefix(x))
        why = f"max difference {float((full - cut).abs().max()):.3g}"
        if torch.allclose(full, cut, rtol=1e-4, atol=1e-5 * float(full.abs().max().clamp(min=1))):
            return prefix, suffix, at_cut
    except Exception as e:  # a stage that cannot take what the one before gives
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    log.warning("%s: the stages of %s's family do not compose to its output (%s); running full forward "
                "passes with the settings stacked instead", layer, type(model).__name__, why)
    return (lambda h: h), model, False


def layer_counts(bases: dict, dense: bool) -> dict:
    """``{layer: [n, ...]}``: the count grid of each layer, with the 80 %/99 % counts of every basis.

    ``bases`` is ``{layer: {basis: fitted basis}}`` (``explained_variance_ratio_``).
    """
    from .bases import counts as variance_counts

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
        mean = fitted["pca"].mean_ if "pca" in fitted else next(iter(fitted.values())).mean_
        found = []
        rows = sweep_layer(model, dataset, layer, fitted, mean, counts[layer], indices=indices,
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
