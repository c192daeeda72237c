"""Independent components (ICA) of a layer's activations, whitened by PCA (:mod:`._factor` says what
the non-orthogonal bases share).
"""
from __future__ import annotations

import math

import numpy as np

from ._factor import _Factor, _learned, _positive_int
from .moments import _as_2d
from .pca import PCABasis


class ICABasis(_Factor):
    """Independent components of a layer's activations, whitened by its PCA.

    Parameters
    ----------
    n_components : int
        K, at most the number of principal components with non-zero variance
        (above ``1e-12`` of the largest) of the PCA used.
    max_rows : int
        FastICA runs on a seeded subsample of at most this many rows.
    seed : int
        Seeds the subsample and FastICA's start.
    max_iter, tol : FastICA's (``algorithm='parallel'``, ``fun='logcosh'``).

    Attributes
    ----------
    components_ : ndarray of shape (K, d)
        Unit mixing directions ``w_j = a_j / ||a_j||``, by descending variance.
    encoder_ : ndarray of shape (K, d)
        The linear encoder: ``transform(X) = (X - mean_) @ encoder_.T``.
    explained_variance_ : ndarray of shape (K,)
        ``Var(z_j) = ||a_j||**2`` over the fit data.
    explained_variance_ratio_ : ndarray of shape (K,)
        Over the total variance of ``X``. The K directions span the top-K PC
        subspace, so the shares sum to the top-K PCs' explained-variance ratio,
        and ``inverse_transform(transform(X))`` is the top-K PCA reconstruction.
    mean_, offset_ : ndarray of shape (d,)
        The mean of ``X`` (both).
    code_mean_, baseline_ : ndarray of shape (K,)
        Zeros (the codes are centred).

    Notes
    -----
    With ``y = (x - mean_) @ V_K.T / sqrt(lambda_K)`` the whitened top-K PCA
    scores, FastICA (``whiten=False``) finds an orthogonal unmixing ``R``,
    sources ``s = y @ R.T``, and mixing vectors ``a_j``, the columns of
    ``V_K.T diag(sqrt(lambda_K)) R.T``. Codes are ``z_j = s_j ||a_j||``, so
    ``z_j w_j = s_j a_j``. Since the PCA is exact over all of ``X``,
    ``Var(s_j) = 1`` and ``Var(z_j) = ||a_j||**2`` without a second pass.
    Signs: each code's skewness on the subsample is made positive; when it is
    within 3 standard errors of 0 (``3 sqrt(6 / rows)``: a symmetric source),
    the largest-magnitude loading is made positive instead.

    Memory: the whitened subsample, at most ``max_rows`` rows read chunk by
    chunk by sorted fancy indexing (two ``max_rows x K`` float64 arrays plus
    one chunk), and the PCA's ``O(d**2)``. Time: one streamed pass for the PCA
    if none is given, ``O(max_rows K**2)`` per FastICA iteration.
    """

    _SETTINGS = ("n_components", "max_rows", "seed", "max_iter", "tol")
    _LEARNED = _Factor._LEARNED + ("encoder_",)
    encoder_ = _learned("encoder_", "ndarray (K, d): transform(X) = (X - mean_) @ encoder_.T.")

    def __init__(self, n_components: int = 64, *, max_rows: int = 100_000, seed: int = 0,
                 max_iter: int = 400, tol: float = 1e-4):
        self.n_components, self.max_rows, self.seed = n_components, max_rows, seed
        self.max_iter, self.tol = max_iter, tol
        self._fitted, self._cache = None, {}

    def fit(self, X, y=None, pca: PCABasis | None = None, chunk_size: int = 16384) -> "ICABasis":
        """Fit on ``X`` (array or memory map of shape (n, d)); ``pca``: a fitted PCABasis of the same X."""
        from sklearn.decomposition import FastICA

        k = _positive_int("n_components", self.n_components)
        max_rows = _positive_int("max_rows", self.max_rows, 2)
        X = _as_2d(X, None)
        if pca is None:
            pca = PCABasis().fit(X, chunk_size=chunk_size)
        elif pca.n_features_in_ != X.shape[1] or pca.n_samples_seen_ != len(X):
            raise ValueError(f"pca was fitted on {pca.n_samples_seen_} rows of {pca.n_features_in_} features, X has "
                             f"shape {X.shape}; pass the PCABasis of this X, or pca=None to fit one.")
        lam, V = pca.explained_variance_, pca.components_
        total = float(lam.sum() / pca.explained_variance_ratio_.sum())
        k = min(k, int(np.sum(lam > 1e-12 * lam[0])) if lam[0] > 0 else 0)
        if k == 0:
            raise ValueError(f"X ({len(X)} rows) has no variance: there are no independent components to find.")
        lam, V, mean = lam[:k], V[:k], pca.mean_
        whiten = V / np.sqrt(lam)[:, None]  # (k, d): y = (x - mean) @ whiten.T
        rows = np.sort(np.random.default_rng(self.seed).choice(len(X), min(len(X), max_rows), replace=False))
        Y = np.empty((len(rows), k))
        for start in range(0, len(rows), chunk_size):
            Y[start:start + chunk_size] = (X[rows[start:start + chunk_size]] - mean) @ whiten.T
        R = FastICA(whiten=False, max_iter=self.max_iter, tol=self.tol, random_state=self.seed).fit(Y).components_
        u, _, vt = np.linalg.svd(R)
        R = u @ vt  # orthogonal to rounding
        A = V.T @ (np.sqrt(lam)[:, None] * R.T)  # (d, k) mixing vectors a_j
        norms = np.linalg.norm(A, axis=0)
        components, encoder = A.T / norms[:, None], (R @ whiten) * norms[:, None]
        S = Y @ R.T
        S -= S.mean(axis=0)
        skew = (S ** 3).mean(axis=0) / (S ** 2).mean(axis=0) ** 1.5
        loading = components[np.arange(k), np.abs(components).argmax(axis=1)]
        signs = np.where(np.abs(skew) > 3 * math.sqrt(6 / len(rows)), np.sign(skew), np.sign(loading))
        variance = norms ** 2
        self._set_fitted(np.argsort(-variance, kind="stable"),
                         components_=components * signs[:, None], encoder_=encoder * signs[:, None],
                         explained_variance_=variance, explained_variance_ratio_=variance / total,
                         mean_=mean, offset_=mean, code_mean_=np.zeros(k), n_samples_seen_=len(X))
        return self

    def _encode(self, rows):
        return (rows - self._tensor("mean_", rows)) @ self._tensor("encoder_", rows).T
