"""What every kind of basis shares: the estimator base class (orthonormal bases: PCA, neurons), and
reading a saved basis back (:func:`read_saved`), refusing one that is stale or damaged.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from ..pipeline import store
from .moments import StreamingMoments, _as_2d

BASES_MADE_BY = "02_pca (python -m helpers.run --only 02)"

log = logging.getLogger(__name__)


class _Basis:
    """Shared estimator logic: streamed moments, lazily solved basis, transforms."""

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components
        self._moments = StreamingMoments()
        self._solved = None

    # -- fitting ---------------------------------------------------------------
    def partial_fit(self, X, y=None):
        """Add a chunk ``X`` of shape (m, d); the basis is re-solved on next use."""
        self._moments.partial_fit(X)
        self._solved = None
        return self

    def fit(self, X, y=None, chunk_size: int = 16384):
        """Fit on ``X`` of shape (n, d) (an array or memory map), ``chunk_size`` rows at a time."""
        self._moments = StreamingMoments()
        for start in range(0, len(X), chunk_size):
            self._moments.partial_fit(X[start:start + chunk_size])
        self._moments.release()
        self._solved = None
        return self

    @classmethod
    def from_moments(cls, moments: StreamingMoments, n_components: int | None = None):
        """A basis solved from already accumulated moments (shared, not copied)."""
        basis = cls(n_components)
        basis._moments = moments
        return basis

    def _solution(self) -> dict:
        if self._solved is None:
            self._moments._check()
            cov = self._moments.covariance_
            k = self.n_components or cov.shape[0]
            if not 1 <= k <= cov.shape[0]:
                raise ValueError(
                    f"n_components={self.n_components} must be between 1 and n_features={cov.shape[0]}."
                )
            components, variance = self._solve(cov)
            self._solved = {
                "components_": components[:k],
                "explained_variance_": variance[:k],
                "explained_variance_ratio_": variance[:k] / np.trace(cov),
                "mean_": self._moments.mean_,
            }
        return self._solved

    # -- learned attributes ----------------------------------------------------
    components_ = property(lambda self: self._solution()["components_"],
                           doc="ndarray of shape (n_components, d): unit basis vectors, descending variance.")
    explained_variance_ = property(lambda self: self._solution()["explained_variance_"],
                                   doc="ndarray of shape (n_components,): variance along each vector.")
    explained_variance_ratio_ = property(lambda self: self._solution()["explained_variance_ratio_"],
                                         doc="ndarray of shape (n_components,): variance / total variance.")
    mean_ = property(lambda self: self._solution()["mean_"], doc="ndarray of shape (d,).")
    n_samples_seen_ = property(lambda self: self._moments.n_samples_seen_)
    n_features_in_ = property(lambda self: self._moments.n_features_in_)

    # -- the common API of every basis (helpers.bases, helpers.bases.sae) --------------
    relu_input_ = False  # the basis reconstructs the activations themselves, not their ReLU
    encoder_ = property(lambda self: self.components_,
                        doc="ndarray of shape (n_components, d): orthonormal, so the encoder is the decoder.")
    offset_ = property(lambda self: self.mean_, doc="ndarray of shape (d,): ``X ≈ offset_ + Z @ components_``.")
    code_mean_ = property(lambda self: np.zeros(len(self.components_)),
                          doc="ndarray of shape (n_components,): mean code over the sample (0: centred).")
    baseline_ = property(lambda self: np.zeros(len(self.components_)),
                         doc="ndarray of shape (n_components,): the code an ablated vector is set to (its mean).")

    def encode(self, rows):
        """:meth:`transform` in torch: rows (m, d) on any device -> codes (m, n_components), same dtype."""
        import torch

        E = torch.as_tensor(self.encoder_, dtype=rows.dtype, device=rows.device)
        return (rows - torch.as_tensor(self.mean_, dtype=rows.dtype, device=rows.device)) @ E.T

    # -- transforms ------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Coefficients ``(X - mean_) @ components_.T``, shape (m, n_components)."""
        X = _as_2d(X, self.n_features_in_)
        return (X - self.mean_) @ self.components_.T

    def inverse_transform(self, Z) -> np.ndarray:
        """Back to activation space: ``Z @ components_ + mean_``, shape (m, d)."""
        Z = _as_2d(Z, len(self.components_), "Z")
        return Z @ self.components_ + self.mean_

    # -- persistence -----------------------------------------------------------
    def save(self, path) -> None:
        """Save the moments and the solved basis to an ``.npz`` file."""
        s = self._solution()
        np.savez(path, kind=type(self).__name__, n_components=self.n_components or 0,
                 **{k: v for k, v in s.items()}, **self._moments.state())

    @classmethod
    def load(cls, path):
        """Load a basis saved with :meth:`save`."""
        def build(data):
            basis = cls(int(data["n_components"]) or None)
            basis._moments = StreamingMoments.from_state(data)
            basis._solved = {k: data[k] for k in
                             ("components_", "explained_variance_", "explained_variance_ratio_", "mean_")}
            return basis

        return read_saved(path, cls.__name__, build)


def read_saved(path, kind: str, build):
    """A basis from an ``.npz`` written by a basis' ``save``: ``build(arrays)`` when it holds a ``kind``.

    Raises
    ------
    store.CorruptArtifactError
        For an unreadable or incomplete file, saying to delete its folder and rerun 02.
    ValueError
        When the file holds another kind of basis.
    """
    path = Path(path)
    try:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        found = str(data["kind"])
        basis = build(data) if found == kind else None
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise store.CorruptArtifactError(f"{path} is corrupt or not a saved basis ({type(e).__name__}: {e}); "
                                         f"delete {path.parent} and rerun {BASES_MADE_BY}.") from None
    if basis is None:
        raise ValueError(f"{path} holds a {found}, not a {kind}; load it with {found}.load.")
    return basis
