"""PCA and the neuron basis (the paper's two), on the streamed moments of :mod:`.moments`.

:class:`PCABasis` and :class:`NeuronBasis` follow scikit-learn's estimator API
(``fit``, ``partial_fit``, ``transform``, ``inverse_transform``, learned
attributes ending in ``_``): the mean and covariance are accumulated in float64
over chunks, so the data never has to fit in memory and streaming equals one
shot; components have deterministic signs.
"""
from __future__ import annotations

import numpy as np

from ._base import _Basis
from .moments import _as_2d


class PCABasis(_Basis):
    """Principal components of streamed activations (centred, not whitened).

    Parameters
    ----------
    n_components : int, optional
        Number of components kept (default: all ``d``).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, d)
        Eigenvectors of the covariance, by descending eigenvalue; each one's
        largest-magnitude loading is positive (deterministic signs).
    explained_variance_ : ndarray of shape (n_components,)
        Eigenvalues (``n - 1`` denominator, as scikit-learn).
    explained_variance_ratio_ : ndarray of shape (n_components,)
    mean_ : ndarray of shape (d,)

    Notes
    -----
    Exact: the eigendecomposition of the full covariance. Memory ``O(d**2)``
    plus one chunk, whatever ``n``; time ``O(n d**2 + d**3)``.
    """

    @staticmethod
    def _solve(cov):
        variance, vectors = np.linalg.eigh(cov)
        variance, vectors = np.clip(variance[::-1], 0, None), vectors[:, ::-1].T
        rows = np.arange(len(vectors))
        signs = np.sign(vectors[rows, np.abs(vectors).argmax(axis=1)])
        return vectors * signs[:, None], variance


class NeuronBasis(_Basis):
    """The neuron (axis-aligned) basis, ordered by each neuron's variance.

    Attributes are those of :class:`PCABasis`; ``components_`` rows are unit
    vectors ``e_i`` in order of descending variance (ties: lower index first),
    and ``order_`` holds the neuron indices.
    """

    @staticmethod
    def _solve(cov):
        variance = np.diag(cov).copy()
        order = np.argsort(-variance, kind="stable")
        return np.eye(len(cov))[order], variance[order]

    def transform(self, X) -> np.ndarray:
        """Centred activations of the neurons in order: ``(X - mean_)[:, order_]``, shape (m, n_components)."""
        X = _as_2d(X, self.n_features_in_)
        return (X - self.mean_)[:, self.order_]

    @property
    def order_(self) -> np.ndarray:
        """ndarray of shape (n_components,): neuron index of each basis vector."""
        return self.components_.argmax(axis=1)
