"""Removing basis vectors from a layer's output (Fig. 6): one form per kind of basis, exact when nothing is removed.

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

:func:`ablate` does it with a forward hook (always removed); the sweep
(:mod:`.accuracy`) applies many settings at once.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch

from ..models import families, sites

log = logging.getLogger(__name__)


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


def _site(model, layer: str) -> sites.Site:
    """A site to write through (the output format is read from the output itself)."""
    path = families.resolve(model, [layer])[layer]
    return sites.Site(layer, path, "any", ())


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


STACK_ROWS = {"cpu": 512}
"""Images per suffix call by device type. On the 2-core CPU the stand-ins' sweep ran fastest with small
stacks (conv1 of mini_alexnet: 512 rows 2.7 s, 1,024 4.1 s, 4,096 5.0 s for the same settings): the
stack should stay in the caches. Elsewhere :data:`STACK_ROWS_DEFAULT`."""


STACK_ROWS_DEFAULT = 2048


def stack_rows(device) -> int:
    """The number of images (settings x batch) the sweep stacks into one call on ``device``."""
    return STACK_ROWS.get(torch.device(device).type, STACK_ROWS_DEFAULT)


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
