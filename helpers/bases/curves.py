"""Fig. 5: the cumulative explained-variance curve of a basis, and the vectors needed for 80 % / 99 %.
"""
from __future__ import annotations

import numpy as np


def explained_curve(basis, X, relu: bool = False, chunk_size: int = 16384) -> np.ndarray:
    """Fig. 5 for any basis: the variance explained when reconstructing with the top k vectors only.

    With codes ``z = basis.transform(x)`` and directions ``w_j`` (``components_``),
    the reconstruction from the top ``k`` vectors keeps their codes and sets
    the others to their mean: ``x̂_k = mean + Σ_{j<k} (z_j - z̄_j) w_j``, and

        R²(k) = 1 - Σ ||x - x̂_k||² / Σ ||x - mean||²

    over the sample. For an orthonormal basis this is the cumulative sum of
    ``explained_variance_ratio_``; for others it can fall short of it or even
    decrease (vectors that overlap or cancel).

    Parameters
    ----------
    basis : a fitted basis (``transform``, ``components_``, ``code_mean_``)
    X : ndarray or memory map of shape (n, d)
        The layer's (pre-ReLU) sample, streamed.
    relu : bool
        The basis reconstructs ``relu(X)`` (PCA post-ReLU, NMF).

    Returns
    -------
    ndarray of shape (n_components,)
        ``R²(k)`` for ``k = 1 … n_components``.

    Notes
    -----
    Exact for every k from the sums ``a_j = Σ z̃_j (w_j · c)`` and
    ``M = Z̃ᵀ Z̃``: ``Σ ||c - Σ_{j<k} z̃_j w_j||² = Σ ||c||² - 2 Σ_{j<k} a_j +
    Σ_{i,j<k} M_ij (w_i · w_j)``. Memory ``O(K²)`` float64 for a
    non-orthonormal basis of K vectors (only ``O(K)`` for an orthonormal one)
    plus one chunk, whatever ``n``.
    """
    W = np.asarray(basis.components_, np.float64)
    K = len(W)
    gram = W @ W.T
    orthonormal = np.allclose(gram, np.eye(K), atol=1e-8)
    mean, zbar = np.asarray(basis.mean_, np.float64), np.asarray(basis.code_mean_, np.float64)
    total, a = 0.0, np.zeros(K)
    M = np.zeros(K) if orthonormal else np.zeros((K, K))
    for start in range(0, len(X), chunk_size):
        x = np.asarray(X[start:start + chunk_size], np.float64)
        if relu:
            x = np.maximum(x, 0)
        c = x - mean
        z = basis.transform(x) - zbar
        total += float(np.einsum("ij,ij->", c, c))
        a += np.einsum("ij,ij->j", z, c @ W.T)
        M += np.einsum("ij,ij->j", z, z) if orthonormal else z.T @ z
    if not total > 0:
        raise ValueError("the sample has no variance to explain (every vector is the same).")
    if orthonormal:
        kept = np.cumsum(M - 2 * a)  # Σ_j<k (M_jj - 2 a_j)
    else:
        G = M * gram
        prefix = np.cumsum(np.cumsum(G, axis=0), axis=1)
        kept = np.diagonal(prefix) - 2 * np.cumsum(a)
    return 1 - (total + kept) / total


def counts(ratio, thresholds=(0.8, 0.99)) -> list[int]:
    """Number of basis vectors whose cumulative explained-variance ratio reaches each threshold."""
    return curve_counts(np.cumsum(ratio), thresholds)


def curve_counts(curve, thresholds=(0.8, 0.99)) -> list:
    """The first k where ``curve`` (R² for k = 1, 2, …) reaches each threshold; ``None`` where it never does.

    A curve that ends at 1 (a complete basis) reaches every threshold by its last k.
    """
    curve = np.asarray(curve, np.float64)
    out = []
    for t in thresholds:
        hit = np.flatnonzero(curve >= t - 1e-12)
        out.append(int(hit[0]) + 1 if len(hit) else (len(curve) if curve[-1] >= 1 - 1e-9 else None))
    return out
