"""Mean and covariance of activations, accumulated chunk by chunk in float64.

Precision: each chunk is shifted by a reference mean (the first chunk's) and
its Gram matrix ``X.T @ X`` is computed by BLAS (``syrk``) in the input's
dtype, then added to a float64 sum. The rounding is that of one dot product
over one chunk (at most ``chunk_size`` rows), independent of ``n``; pass
float64 data for a float64 product.

On a torch device (``StreamingMoments(device=...)``) each chunk is uploaded
(pinned and non-blocking on CUDA), converted to float64 there, shifted, and its
column sums and Gram matrix are added on the device, all in float64: the
rounding is that of a float64 product whatever the input's dtype. The fitting
code uses the device only when it is a GPU (see :func:`fit_bases`); on the CPU
numpy's BLAS path is kept.
"""
from __future__ import annotations

import warnings

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """The estimator has seen no data yet."""


def _as_2d(X, d: int | None, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, n_features); got shape {X.shape}.")
    if d is not None and X.shape[1] != d:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but this estimator was fitted on {d}; "
            "pass activations of the same layer."
        )
    return np.ascontiguousarray(X)


def _upload(X: np.ndarray, device):
    """``X`` as a tensor to copy to ``device``: in pinned memory for CUDA (so the copy need not wait)."""
    import torch

    if device.type == "cuda":
        pinned = torch.empty(X.shape, dtype=torch.float32 if X.dtype == np.float32 else torch.float64,
                             pin_memory=True)
        pinned.numpy()[...] = X
        return pinned
    with warnings.catch_warnings():  # a read-only memory map: torch warns, though it is only read here
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(X)


class StreamingMoments:
    """Mean and covariance (``n - 1`` denominator) accumulated chunk by chunk.

    Attributes
    ----------
    n_samples_seen_ : int
    n_features_in_ : int
    mean_ : ndarray of shape (d,), float64
    covariance_ : ndarray of shape (d, d), float64

    Parameters
    ----------
    device : str or torch.device, optional
        Where the sums are kept and added: ``None`` (numpy, in host memory) or a
        torch device, e.g. ``"cuda"`` (or ``"cpu"``: torch's float64 path).

    Notes
    -----
    Memory: ``O(d**2)`` float64 plus one chunk; with a ``device``, the
    ``d x d`` and ``d`` float64 sums live on the device, plus one chunk there
    (as uploaded and in float64).
    """

    def __init__(self, device=None):
        self.n_samples_seen_ = 0
        self.device = device
        self._shift = self._s1 = self._s2 = None
        self._scratch = None  # reused for the shifted chunk: fresh pages cost more than the subtraction

    def partial_fit(self, X) -> "StreamingMoments":
        """Add the rows of ``X`` (ndarray of shape (m, d), or a tensor with a ``device``) to the sums."""
        if self.device is not None:
            return self._partial_fit_torch(X)
        X = _as_2d(X, self._s1.shape[0] if self._s1 is not None else None)
        if len(X) == 0:
            return self
        if self._shift is None:
            d = X.shape[1]
            self._shift = X.mean(axis=0, dtype=np.float64)
            self._s1, self._s2 = np.zeros(d), np.zeros((d, d))
        if self._scratch is None or self._scratch.dtype != X.dtype or len(self._scratch) < len(X):
            self._scratch = np.empty_like(X)
        Xs = np.subtract(X, self._shift.astype(X.dtype), out=self._scratch[: len(X)])
        self._s1 += Xs.sum(axis=0, dtype=np.float64)
        self._s2 += Xs.T @ Xs  # symmetric: numpy calls syrk
        self.n_samples_seen_ += len(X)
        return self

    def _partial_fit_torch(self, X) -> "StreamingMoments":
        import torch

        device = torch.device(self.device)
        if not isinstance(X, torch.Tensor):
            X = _as_2d(X, None)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D of shape (n_samples, n_features); got shape {tuple(X.shape)}.")
        if self._s1 is not None and X.shape[1] != self._s1.shape[0]:
            raise ValueError(
                f"X has {X.shape[1]} features, but this estimator was fitted on {self._s1.shape[0]}; "
                "pass activations of the same layer."
            )
        if len(X) == 0:
            return self
        if isinstance(X, np.ndarray):
            X = _upload(X, device)
        shared = X.device == device and X.dtype == torch.float64  # the caller's own tensor: not written
        X = X.to(device, non_blocking=True).to(torch.float64)
        if self._shift is None:
            d = X.shape[1]
            self._shift = X.mean(0)
            self._s1 = torch.zeros(d, dtype=torch.float64, device=device)
            self._s2 = torch.zeros((d, d), dtype=torch.float64, device=device)
        Xs = X - self._shift if shared else X.sub_(self._shift)
        self._s1 += Xs.sum(0)
        self._s2.addmm_(Xs.T, Xs)
        self.n_samples_seen_ += len(Xs)
        return self

    def _sums(self):
        """``(shift, s1, s2)`` as float64 numpy arrays (copied from the device)."""
        return tuple(a if isinstance(a, np.ndarray) or a is None else a.cpu().numpy()
                     for a in (self._shift, self._s1, self._s2))

    def release(self) -> "StreamingMoments":
        """Free the chunk-sized scratch buffer (done by ``fit`` at its end)."""
        self._scratch = None
        return self

    def _check(self):
        if self.n_samples_seen_ < 2:
            raise NotFittedError(
                f"{type(self).__name__} has seen {self.n_samples_seen_} samples; "
                "call fit or partial_fit with at least 2 first."
            )

    @property
    def n_features_in_(self) -> int:
        self._check()
        return self._s1.shape[0]

    @property
    def mean_(self) -> np.ndarray:
        self._check()
        shift, s1, _ = self._sums()
        return shift + s1 / self.n_samples_seen_

    @property
    def covariance_(self) -> np.ndarray:
        self._check()
        n = self.n_samples_seen_
        _, s1, s2 = self._sums()
        return (s2 - np.outer(s1, s1) / n) / (n - 1)

    def state(self) -> dict:
        """The running sums, for saving and resuming (see :meth:`from_state`); float64 numpy arrays."""
        shift, s1, s2 = self._sums()
        return {"n": self.n_samples_seen_, "shift": shift, "s1": s1, "s2": s2}

    @classmethod
    def from_state(cls, state, device=None) -> "StreamingMoments":
        """Resume from :meth:`state`, keeping the sums on ``device`` (see the class)."""
        m = cls(device)
        m.n_samples_seen_ = int(state["n"])
        sums = [np.asarray(state[k], np.float64) for k in ("shift", "s1", "s2")]
        if device is not None:
            import torch

            sums = [torch.as_tensor(a, device=torch.device(device)) for a in sums]
        m._shift, m._s1, m._s2 = sums
        return m
