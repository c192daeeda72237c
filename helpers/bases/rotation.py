"""A random orthonormal basis: the baseline every yardstick is read against.

A basis drawn uniformly from the rotations of activation space (Haar measure), knowing nothing of the
network, then ordered as the others: by the variance of the sample along each vector. Whatever a fitted
basis does better than it (fewer vectors for 80 % of the variance, larger ablation drops, higher machine
scores, better-matching concepts) it owes to what it learned, not to being a basis.
"""
from __future__ import annotations

import numpy as np

from ._base import _Basis


def haar_rotation(d: int, seed: int) -> np.ndarray:
    """A ``d x d`` orthonormal matrix drawn from the Haar measure (QR of a Gaussian matrix, signs of R's diagonal
    folded in: Mezzadri 2007), from a generator seeded by ``seed`` and ``d``. Rows are the vectors."""
    rng = np.random.default_rng([int(seed), 11, int(d)])
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))[None, :]).T


class RandomBasis(_Basis):
    """A seeded random orthonormal basis, ordered by the variance along each vector.

    Parameters
    ----------
    n_components : int, optional
        Number of vectors kept (default: all ``d``).
    seed : int
        Seeds the rotation (with ``d``): the same seed gives the same basis.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, d)
        Rows of :func:`haar_rotation`, by descending variance of the sample along them (ties: the draw's
        order); each one's largest-magnitude loading is positive.
    explained_variance_, explained_variance_ratio_, mean_
        As :class:`helpers.bases.PCABasis` (``v·Σv`` for each vector ``v``).

    Notes
    -----
    Fitted on the streamed moments (``O(d**2)`` memory, whatever ``n``), like PCA and the neurons.
    """

    def __init__(self, n_components: int | None = None, seed: int = 0):
        super().__init__(n_components)
        self.seed = seed

    @classmethod
    def from_moments(cls, moments, n_components: int | None = None, seed: int = 0):
        basis = super().from_moments(moments, n_components)
        basis.seed = seed
        return basis

    @classmethod
    def like(cls, basis, seed: int = 0):
        """The random basis of the layer another basis of the same kind of moments was fitted on (PCA, neurons):
        its streamed moments shared, so it equals the one 02 fits with the same ``seed``."""
        return cls.from_moments(basis._moments, seed=seed)

    def _solve(self, cov):
        vectors = haar_rotation(len(cov), self.seed)
        variance = np.einsum("ij,jk,ik->i", vectors, cov, vectors)
        order = np.argsort(-variance, kind="stable")
        vectors, variance = vectors[order], np.clip(variance[order], 0, None)
        rows = np.arange(len(vectors))
        signs = np.sign(vectors[rows, np.abs(vectors).argmax(axis=1)])
        return vectors * signs[:, None], variance
