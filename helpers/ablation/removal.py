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
        self.basis = basis
        self.which = np.asarray(which, dtype=np.int64).reshape(-1)
        self.codes = {} if cache is None else cache
        self.linear = hasattr(basis, "encoder_") or not hasattr(basis, "encode")
        self.form = None  # "codes", "columns", "dense" or "low_rank": decided when first applied
        self._cache = {}

    def _host(self) -> tuple[str, dict]:
        """The form and its float64 arrays, computed with numpy (the CPU's arithmetic, unchanged)."""
        basis, which = self.basis, self.which
        W = np.asarray(basis.components_, np.float64)[which]
        baseline = getattr(basis, "baseline_", None)
        b = np.zeros(len(which)) if baseline is None else np.asarray(baseline, np.float64)[which]
        if not (self.linear and len(which)):
            return "codes", {"W": W, "b": b}
        E = np.asarray(getattr(basis, "encoder_", basis.components_), np.float64)[which]  # orthonormal rows: their own
        mean = np.asarray(basis.mean_, np.float64)
        offset = -(E @ mean + b)  # z - b = rows @ E.T + offset
        d = W.shape[1]
        cols = np.abs(W).argmax(1)
        if np.array_equal(E, W) and np.array_equal(np.abs(W), np.eye(d)[cols]) and len(set(cols)) == len(cols):
            keep, fill = np.ones(d), np.zeros(d)  # neurons: set to their mean
            keep[cols], fill[cols] = 0, mean[cols] + b * W[np.arange(len(cols)), cols]
            return "columns", {"keep": keep, "fill": fill}
        if 2 * len(which) >= d:  # one d x d product: rows @ (I - E.T W) + (mean E.T + b) W
            return "dense", {"M": np.eye(d) - E.T @ W, "c": -offset @ W}
        return "low_rank", {"E_T": np.ascontiguousarray(E.T), "offset": offset, "W": W}  # two thin products

    def _on_device(self, device) -> tuple[str, dict]:
        """The same form and arrays computed in float64 on ``device`` (a GPU), from the basis's matrices
        uploaded once per basis (shared through ``cache``): no ``d x d`` product on the host per setting."""
        basis = self.basis
        shared = self.codes.get(("basis", device))
        if shared is None:
            f64 = dict(dtype=torch.float64, device=device)
            W = torch.as_tensor(np.asarray(basis.components_, np.float64), **f64)
            E = torch.as_tensor(np.asarray(basis.encoder_, np.float64), **f64) if hasattr(basis, "encoder_") else W
            baseline = getattr(basis, "baseline_", None)
            b = torch.zeros(len(W), **f64) if baseline is None else torch.as_tensor(np.asarray(baseline), **f64)
            shared = self.codes[("basis", device)] = {"W": W, "E": E, "b": b,
                                                      "mean": torch.as_tensor(np.asarray(basis.mean_), **f64)}
        idx = torch.as_tensor(self.which, device=device)
        W, E, b, mean = shared["W"][idx], shared["E"][idx], shared["b"][idx], shared["mean"]
        offset = -(E @ mean + b)
        d = W.shape[1]
        cols = W.abs().argmax(1)
        one_hot = torch.zeros_like(W).scatter_(1, cols[:, None], 1.0)
        if torch.equal(E, W) and torch.equal(W.abs(), one_hot) and len(torch.unique(cols)) == len(cols):
            keep, fill = torch.ones_like(mean), torch.zeros_like(mean)
            keep[cols], fill[cols] = 0, mean[cols] + b * W[torch.arange(len(cols), device=device), cols]
            return "columns", {"keep": keep, "fill": fill}
        if 2 * len(self.which) >= d:
            return "dense", {"M": torch.eye(d, dtype=W.dtype, device=device) - E.T @ W, "c": -offset @ W}
        return "low_rank", {"E_T": E.T.contiguous(), "offset": offset, "W": W}

    @classmethod
    def orthonormal(cls, V, mean) -> "Removal":
        """The removal of orthonormal rows ``V`` (k, d) around ``mean`` (d,): ``a - ((a - mean) V_Sᵀ) V_S``."""
        V = np.asarray(V).reshape(-1, np.asarray(mean).shape[-1])
        return cls(_Rows(V, mean), np.arange(len(V)))

    def __len__(self) -> int:
        return len(self.which)

    def _tensors(self, rows) -> dict:
        """The form's tensors in the rows' device and dtype, made on first use there (host arrays not kept).

        On the CPU they come from :meth:`_host`; on other devices a linear basis's
        are computed there (:meth:`_on_device`). Memory per setting: ``d`` values
        (neurons), ``d**2`` (dense) or ``2 k d`` (low rank) in the rows' dtype.
        """
        where = (rows.device, rows.dtype)
        if where not in self._cache:
            on_host = rows.device.type == "cpu" or not (self.linear and len(self))
            self.form, arrays = self._host() if on_host else self._on_device(rows.device)
            self._cache[where] = {k: torch.as_tensor(v, device=rows.device, dtype=rows.dtype)
                                  for k, v in arrays.items()}
            self._cache[where]["which"] = torch.as_tensor(self.which, device=rows.device)
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
def _stacked(module, site, fn, groups: int, memory_format=None):
    """While inside, ``module``'s output (``groups`` settings stacked in its batch) goes through ``fn``."""
    handle = module.register_forward_hook(lambda m, a, out: site.apply(out, fn, groups,
                                                                       memory_format=memory_format))
    try:
        yield
    finally:
        handle.remove()


STACK_ROWS = {"cpu": 512}
"""Images per suffix call on the CPU. On the 2-core CPU the stand-ins' sweep ran fastest with small
stacks (conv1 of mini_alexnet: 512 rows 2.7 s, 1,024 4.1 s, 4,096 5.0 s for the same settings): the
stack should stay in the caches. On CUDA the stack is sized from memory (:func:`stack_rows`)."""


STACK_ROWS_DEFAULT = 1024
"""Images of the first stacked call on a GPU (whose peak memory sizes the rest), and elsewhere."""


GPU_MEMORY_SHARE = 0.5
"""Share of the GPU memory free at the start of a sweep that one stacked call may take."""


GPU_STACK_LIMIT = 16384


def stack_rows(device, per_image: float | None = None) -> int:
    """The number of images (settings x batch) the sweep stacks into one call on ``device``.

    On CUDA with ``per_image`` (the bytes one stacked image was measured to take
    through the suffix): as many as fit in :data:`GPU_MEMORY_SHARE` of the free
    memory, between :data:`STACK_ROWS_DEFAULT` and :data:`GPU_STACK_LIMIT`.
    """
    device = torch.device(device)
    if device.type == "cuda" and per_image:
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(GPU_STACK_LIMIT, max(STACK_ROWS_DEFAULT, GPU_MEMORY_SHARE * free // per_image)))
    return STACK_ROWS.get(device.type, STACK_ROWS_DEFAULT)


class _Peak:
    bytes = 0


@contextmanager
def measured(device, wanted: bool):
    """``peak.bytes``: the CUDA memory the block took at its peak (0 when not ``wanted`` or not on CUDA)."""
    peak = _Peak()
    device = torch.device(device)
    if not (wanted and device.type == "cuda"):
        yield peak
        return
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield peak
    torch.cuda.synchronize(device)
    peak.bytes = max(1, torch.cuda.max_memory_allocated(device) - base)


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
