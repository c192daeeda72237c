"""Mean and covariance of activations, accumulated chunk by chunk in float64.

Precision: each chunk is shifted by a reference mean (the first chunk's) and
its Gram matrix ``X.T @ X`` is computed by BLAS (``syrk``) in the input's
dtype, then added to a float64 sum. The rounding is that of one dot product
over one chunk (at most ``chunk_size`` rows), independent of ``n``; pass
float64 data for a float64 product.
"""
from __future__ import annotations

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


class StreamingMoments:
    """Mean and covariance (``n - 1`` denominator) accumulated chunk by chunk.

    Attributes
    ----------
    n_samples_seen_ : int
    n_features_in_ : int
    mean_ : ndarray of shape (d,), float64
    covariance_ : ndarray of shape (d, d), float64

    Notes
    -----
    Memory: ``O(d**2)`` float64 plus one chunk.
    """

    def __init__(self):
        self.n_samples_seen_ = 0
        self._shift = self._s1 = self._s2 = None
        self._scratch = None  # reused for the shifted chunk: fresh pages cost more than the subtraction

    def partial_fit(self, X) -> "StreamingMoments":
        """Add the rows of ``X`` (ndarray of shape (m, d)) to the sums."""
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
        return self._shift + self._s1 / self.n_samples_seen_

    @property
    def covariance_(self) -> np.ndarray:
        self._check()
        n = self.n_samples_seen_
        return (self._s2 - np.outer(self._s1, self._s1) / n) / (n - 1)

    def state(self) -> dict:
        """The running sums, for saving and resuming (see :meth:`from_state`)."""
        return {"n": self.n_samples_seen_, "shift": self._shift, "s1": self._s1, "s2": self._s2}

    @classmethod
    def from_state(cls, state) -> "StreamingMoments":
        m = cls()
        m.n_samples_seen_ = int(state["n"])
        m._shift, m._s1, m._s2 = (np.asarray(state[k], np.float64) for k in ("shift", "s1", "s2"))
        return m
