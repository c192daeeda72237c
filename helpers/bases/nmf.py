"""Non-negative matrix factorisation (NMF) of a layer's post-ReLU activations, streamed (:mod:`._factor`
says what the non-orthogonal bases share).
"""
from __future__ import annotations

import numpy as np
import torch

from ._factor import _Factor, _positive_int
from .moments import _as_2d


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
