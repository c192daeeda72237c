"""Non-orthogonal bases of a layer's activations: independent components (ICA) and NMF.

Both follow the API of :mod:`helpers.bases` (``fit``, ``transform``,
``inverse_transform``, learned attributes ending in ``_``) and add what an
ablation needs: the data are reconstructed as
``offset_ + transform(X) @ components_``, an ablated vector's code is set to
``baseline_`` (the mean code), and :meth:`encode` gives the same codes in
torch, on any device. ``components_`` are unit vectors ordered by the variance
of their codes, so ``explained_variance_[j]`` is the variance that vector ``j``'s
reconstruction ``z_j * w_j`` carries. Unlike PCA, the vectors are not
orthogonal: their shares need not add up to the share they reconstruct together.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .bases import NotFittedError, PCABasis, _as_2d, read_saved


def _learned(name: str, doc: str) -> property:
    def get(self):
        if self._fitted is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) before reading {name}.")
        return self._fitted[name]
    return property(get, doc=doc)


def _positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}; pass e.g. {name}={max(low, 64)}.")
    return int(value)


class _Factor:
    """Shared logic: learned attributes, transforms, persistence."""

    relu_input_ = False  # True when the basis reconstructs relu(X) rather than X
    _SETTINGS: tuple = ("n_components",)
    _LEARNED = ("components_", "explained_variance_", "explained_variance_ratio_", "mean_", "offset_",
                "code_mean_", "n_samples_seen_")

    components_ = _learned("components_", "ndarray (K, d): unit vectors, by descending explained_variance_.")
    explained_variance_ = _learned("explained_variance_", "ndarray (K,): variance of each code over the fit data.")
    explained_variance_ratio_ = _learned("explained_variance_ratio_",
                                         "ndarray (K,): explained_variance_ / total variance of the data.")
    mean_ = _learned("mean_", "ndarray (d,): mean of the data the basis reconstructs.")
    offset_ = _learned("offset_", "ndarray (d,): data ~ offset_ + transform(X) @ components_.")
    code_mean_ = _learned("code_mean_", "ndarray (K,): mean code over the fit data.")
    baseline_ = property(lambda self: self.code_mean_, doc="ndarray (K,): code of an ablated vector (its mean).")
    n_samples_seen_ = _learned("n_samples_seen_", "int: rows the basis was fitted on.")
    n_features_in_ = property(lambda self: self.components_.shape[1], doc="int: d.")

    def _set_fitted(self, order, **learned) -> None:
        """Store the learned attributes (float64), ordering the per-component ones by ``order``."""
        per_component = ("components_", "explained_variance_", "explained_variance_ratio_", "code_mean_", "encoder_")
        self._fitted = {k: int(v) if k == "n_samples_seen_" else
                        np.ascontiguousarray(np.asarray(v, np.float64)[order] if k in per_component else v,
                                             dtype=np.float64) for k, v in learned.items()}
        self._cache = {}

    def _tensor(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        key = (name, rows.device, rows.dtype)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(self._prepared(name), dtype=rows.dtype, device=rows.device)
        return self._cache[key]

    def _prepared(self, name: str) -> np.ndarray:
        return self._fitted[name]

    # -- transforms ------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """Codes of ``rows`` (tensor of shape (m, d)), on their device and in their dtype: shape (m, K)."""
        if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[1] != self.n_features_in_:
            raise ValueError(f"rows must be a 2-D torch.Tensor of shape (m, {self.n_features_in_}); got "
                             f"{type(rows).__name__} of shape {tuple(getattr(rows, 'shape', ()))}.")
        return self._encode(rows)

    def transform(self, X, chunk_size: int = 16384) -> np.ndarray:
        """Codes of ``X`` (array or memory map of shape (m, d)): float64 of shape (m, K), by chunks."""
        X = _as_2d(X, self.n_features_in_)
        out = np.empty((len(X), len(self.components_)))
        for start in range(0, len(X), chunk_size):
            out[start:start + chunk_size] = self.encode(
                torch.from_numpy(np.asarray(X[start:start + chunk_size], np.float64))).numpy()
        return out

    def inverse_transform(self, Z) -> np.ndarray:
        """Back to activation space: ``offset_ + Z @ components_``, shape (m, d)."""
        Z = _as_2d(Z, len(self.components_), "Z")
        return self.offset_ + Z @ self.components_

    # -- persistence -----------------------------------------------------------
    def save(self, path) -> None:
        """Save the settings and the learned attributes to an ``.npz`` file."""
        learned = {k: getattr(self, k) for k in self._LEARNED}  # NotFittedError before fit
        np.savez(path, kind=type(self).__name__, **{k: getattr(self, k) for k in self._SETTINGS}, **learned)

    @classmethod
    def load(cls, path):
        """Load a basis saved with :meth:`save`."""
        def build(data):
            basis = cls(**{k: data[k].item() for k in cls._SETTINGS})
            basis._set_fitted(slice(None), **{k: data[k] for k in cls._LEARNED})
            return basis

        return read_saved(path, cls.__name__, build)


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


def _nnls(b: torch.Tensor, G: torch.Tensor, step: float, n_iter: int) -> torch.Tensor:
    """Approximately ``argmin_{z >= 0} 1/2 z G z.T - b z.T`` for each row of ``b`` (m, K).

    Accelerated projected gradient (FISTA, step ``1 / lambda_max(G)``) from
    ``z = 0``, with per-row adaptive restart (momentum dropped for the rows
    whose step turns against it), ``n_iter`` iterations.
    """
    z, y = torch.zeros_like(b), torch.zeros_like(b)
    t, nb = torch.ones_like(b[:, :1]), -b
    for _ in range(n_iter):
        z_new = torch.addmm(nb, y, G, alpha=-step, beta=-step).add_(y).clamp_(min=0)  # y - step * gradient
        diff = torch.sub(z_new, z, out=z)
        restart = (torch.linalg.vecdot(y.sub_(z_new), diff) > 0)[:, None]
        t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        beta, t = torch.where(restart, 0.0, (t - 1) / t_new), torch.where(restart, 1.0, t_new)
        y, z = torch.addcmul(z_new, beta, diff, out=y), z_new
    return z


class _Moments:
    """Per-column mean and variance (``n - 1`` denominator), accumulated by chunks around a shift."""

    def __init__(self):
        self.n, self.shift = 0, None

    def add(self, A: np.ndarray) -> None:
        if self.shift is None:
            self.shift, self.s1, self.s2 = A.mean(axis=0), np.zeros(A.shape[1]), np.zeros(A.shape[1])
        A = A - self.shift
        self.n, self.s1, self.s2 = self.n + len(A), self.s1 + A.sum(axis=0), self.s2 + (A * A).sum(axis=0)

    def mean(self) -> np.ndarray:
        return self.shift + self.s1 / self.n

    def var(self) -> np.ndarray:
        return np.clip((self.s2 - self.s1 ** 2 / self.n) / (self.n - 1), 0, None)


class NMFBasis(_Factor):
    """Non-negative factorisation of a layer's post-ReLU activations.

    Every method takes the layer's *pre*-ReLU activations ``X`` and applies
    ``relu`` itself (``relu_input_ = True``): ``relu(X) ~ transform(X) @ components_``.

    Parameters
    ----------
    n_components : int
        K. Components that come out all zero are dropped, so ``components_``
        may have fewer rows.
    seed : int
        Seeds the shuffling and scikit-learn's ``MiniBatchNMF``.
    batch_size : int
        Rows per ``MiniBatchNMF.partial_fit`` step.
    epochs : int
        Passes over ``X`` when fitting. The fit keeps improving slowly: on
        100k synthetic post-ReLU rows (d = 128, K = 64, 50 steps an epoch) the
        relative error was 0.48, 0.43, 0.39, 0.35 after 1, 10, 30, 100 epochs
        (PCA with 64 components: 0.21). An epoch costs about 25 ms a step there.
        The default, 5, keeps 02 of the quick profile within a minute per model
        (an NMF of a 60,000 x 256 sample: about 8 s).
    transform_iter : int
        Iterations of the non-negative least-squares solver of the codes. With
        50 on that basis, the squared residual exceeded the exact one (scipy's
        ``nnls``) by a median 1e-5 and at most 1e-3 of ``||relu(x)||**2``;
        with 100, at most 2e-6, at twice the cost.
    chunk_size : int
        Rows read from ``X`` at a time.

    Attributes
    ----------
    components_ : ndarray of shape (K, d)
        Non-negative unit directions ``w_j = H_j / ||H_j||``, by descending variance.
    explained_variance_, code_mean_, baseline_ : ndarray of shape (K,)
        Variance and mean of the codes over the fit data; the baseline is the mean.
    explained_variance_ratio_ : ndarray of shape (K,)
        Over the total variance of ``relu(X)``. The codes are correlated, so
        the shares need not add up to what the K vectors reconstruct together.
    mean_ : ndarray of shape (d,)
        Mean of ``relu(X)``.
    offset_ : ndarray of shape (d,)
        Zeros: NMF has no offset.

    Notes
    -----
    Fitting: ``epochs`` passes, each over the chunks of ``X`` in a seeded
    random order, the rows of each chunk shuffled and split into mini-batches
    of about ``batch_size`` rows, each fed to ``MiniBatchNMF.partial_fit``
    (Frobenius loss, multiplicative updates, init ``'nndsvda'`` on the first
    batch with positive values, or ``'random'`` if K exceeds its size, and the
    forget factor ``0.7 ** (batch_size / n)`` that ``fit`` would use); then one
    streamed pass for the codes' moments. Memory: one chunk plus ``O(K d)``.

    Codes: the non-negative least-squares codes of ``relu(x)`` on
    ``components_``, by :func:`_nnls` (accelerated projected gradient,
    ``transform_iter`` iterations from zero), the one implementation behind
    both :meth:`transform` (float64, CPU) and :meth:`encode` (the rows' dtype
    and device). Cost per row: ``d K`` multiply-adds, then ``K**2`` plus about
    ``10 K`` per iteration, memory-bound: 200,000 rows at K = 64 took 2.5 s
    with 50 iterations on 2 CPU cores (float64).
    """

    relu_input_ = True
    _SETTINGS = ("n_components", "seed", "batch_size", "epochs", "transform_iter", "chunk_size")

    def __init__(self, n_components: int = 64, *, seed: int = 0, batch_size: int = 2048, epochs: int = 5,
                 transform_iter: int = 50, chunk_size: int = 16384):
        self.n_components, self.seed, self.batch_size, self.epochs = n_components, seed, batch_size, epochs
        self.transform_iter, self.chunk_size = transform_iter, chunk_size
        self._fitted, self._cache = None, {}

    def fit(self, X, y=None) -> "NMFBasis":
        """Fit on ``X`` (array or memory map of shape (n, d)): the layer's pre-ReLU activations."""
        from sklearn.decomposition import MiniBatchNMF

        k, batch_size, chunk_size, epochs, _ = (_positive_int(name, getattr(self, name)) for name in (
            "n_components", "batch_size", "chunk_size", "epochs", "transform_iter"))
        X = _as_2d(X, None)
        n = len(X)
        if n < 2:
            raise ValueError(f"X has {n} rows; NMFBasis needs at least 2.")
        rng, nmf = np.random.default_rng(self.seed), None
        for _ in range(epochs):
            for start in rng.permutation(np.arange(0, n, chunk_size)):
                chunk = np.maximum(np.asarray(X[start:start + chunk_size], np.float64), 0)[rng.permutation(
                    min(chunk_size, n - start))]
                for batch in np.array_split(chunk, max(1, round(len(chunk) / batch_size))):
                    if nmf is None and not batch.any():
                        continue
                    if nmf is None:
                        nmf = MiniBatchNMF(k, init="nndsvda" if k <= min(batch.shape) else "random",
                                           batch_size=batch_size, forget_factor=0.7 ** min(1.0, batch_size / n),
                                           random_state=self.seed)
                    nmf.partial_fit(batch)
            if nmf is None:
                raise ValueError(f"X (shape {X.shape}) has no positive entries, so relu(X) is all zero: NMF "
                                 "needs post-ReLU activations with positive values. Pass the pre-ReLU "
                                 "activations of a layer that a ReLU follows.")
        H = nmf.components_.astype(np.float64)
        norms = np.linalg.norm(H, axis=1)
        if not (norms > 0).any():
            raise ValueError(f"MiniBatchNMF found only all-zero components on X of shape {X.shape}; "
                             "check that relu(X) is not almost all zero, or try another seed.")
        self._fitted, self._cache = {"components_": H[norms > 0] / norms[norms > 0, None]}, {}
        data, codes = _Moments(), _Moments()
        for start in range(0, n, chunk_size):
            chunk = np.maximum(np.asarray(X[start:start + chunk_size], np.float64), 0)
            data.add(chunk)
            codes.add(self._encode(torch.from_numpy(chunk)).numpy())
        variance, total = codes.var(), float(data.var().sum())
        self._set_fitted(np.argsort(-variance, kind="stable"), components_=self._fitted["components_"],
                         explained_variance_=variance, explained_variance_ratio_=variance / total,
                         mean_=data.mean(), offset_=np.zeros(X.shape[1]), code_mean_=codes.mean(),
                         n_samples_seen_=n)
        return self

    def _prepared(self, name: str) -> np.ndarray:
        if name == "gram":
            return self.components_ @ self.components_.T
        return super()._prepared(name)

    def _encode(self, rows):
        W, G = self._tensor("components_", rows), self._tensor("gram", rows)
        if "step" not in self._cache:
            self._cache["step"] = 1.0 / float(np.linalg.eigvalsh(self._prepared("gram"))[-1])
        return _nnls(torch.relu(rows) @ W.T, G, self._cache["step"], self.transform_iter)
