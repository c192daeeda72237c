"""Step 2 of the method: bases of a layer's activation space, ordered by variance.

:class:`PCABasis` and :class:`NeuronBasis` follow scikit-learn's estimator API
(``fit``, ``partial_fit``, ``transform``, ``inverse_transform``, learned
attributes ending in ``_``). Both rest on :class:`StreamingMoments`: the mean
and covariance accumulated in float64 over chunks, so the data never has to
fit in memory and streaming equals one shot.

Precision: each chunk is shifted by a reference mean (the first chunk's) and
its Gram matrix ``X.T @ X`` is computed by BLAS (``syrk``) in the input's
dtype, then added to a float64 sum. The rounding is that of one dot product
over one chunk (at most ``chunk_size`` rows), independent of ``n``; pass
float64 data for a float64 product.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import keys, store

log = logging.getLogger(__name__)


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
        from .store import CorruptArtifactError

        path = Path(path)
        try:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
            kind = str(data["kind"])
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise CorruptArtifactError(f"{path} is corrupt or not a saved basis ({type(e).__name__}: {e}); "
                                       f"delete {path.parent} and rerun {BASES_MADE_BY}.") from None
        if kind != cls.__name__:
            raise ValueError(f"{path} holds a {kind}, not a {cls.__name__}.")
        basis = cls(int(data["n_components"]) or None)
        basis._moments = StreamingMoments.from_state(data)
        basis._solved = {k: data[k] for k in
                         ("components_", "explained_variance_", "explained_variance_ratio_", "mean_")}
        return basis


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

    @property
    def order_(self) -> np.ndarray:
        """ndarray of shape (n_components,): neuron index of each basis vector."""
        return self.components_.argmax(axis=1)


def fit_bases(X, post_relu: bool = True, chunk_size: int = 16384, desc: str = "fit bases") -> dict:
    """Fit the paper's bases of one layer in a single pass over its sample.

    Parameters
    ----------
    X : ndarray or memory map of shape (n, d)
        Pre-ReLU activations.
    post_relu : bool
        Also fit the PCA of ``relu(X)`` (not for a layer without ReLU).

    Returns
    -------
    dict
        ``pca_pre_relu``, ``neuron_pre_relu`` (sharing one set of moments) and,
        if asked, ``pca_post_relu``.

    Notes
    -----
    Memory: two ``d x d`` float64 sums plus one chunk, whatever ``n``.
    """
    pre, post = StreamingMoments(), StreamingMoments()
    relu = None
    for start in tqdm(range(0, len(X), chunk_size), desc=desc, leave=False):
        chunk = np.asarray(X[start:start + chunk_size])
        pre.partial_fit(chunk)
        if post_relu:
            relu = np.empty_like(chunk) if relu is None or len(relu) < len(chunk) else relu
            post.partial_fit(np.maximum(chunk, 0, out=relu[: len(chunk)]))
    pre.release(), post.release()
    bases = {"pca_pre_relu": PCABasis.from_moments(pre), "neuron_pre_relu": NeuronBasis.from_moments(pre)}
    if post_relu:
        bases["pca_post_relu"] = PCABasis.from_moments(post)
    return bases


def counts(ratio, thresholds=(0.8, 0.99)) -> list[int]:
    """Number of basis vectors whose cumulative explained-variance ratio reaches each threshold."""
    cum = np.cumsum(ratio)
    return [int(min(np.searchsorted(cum, t - 1e-12) + 1, len(cum))) for t in thresholds]


BASES_MADE_BY = "02_pca (python -m helpers.run --only 02)"
SOURCES = ("bases",)


def bases_key(layers, sample_hash: str) -> dict:
    """What the bases are made from: the layers and the sample (its content hash)."""
    return keys.key({"layers": list(layers)}, {"sample": sample_hash}, SOURCES)


def fit_layer_bases(sample_folder, bases_folder, layers, chunk_size: int = 16384,
                    profile: str = "", sample_key: dict | None = None) -> dict:
    """Fit and save the bases of every layer of a sample (notebook 02).

    Writes ``<layer>_<curve>.npz`` per layer into ``bases_folder``; layers
    finished before an interruption are kept. ``sample_key`` is the key the
    sample must have (a stale sample is refused). Memory: as :func:`fit_bases`.

    Returns
    -------
    dict
        The sidecar of the bases artifact.
    """
    from .sampling import MADE_BY as SAMPLE_MADE_BY
    from .sampling import open_sample

    sample = store.read_meta(sample_folder, sample_key, SAMPLE_MADE_BY)
    key = bases_key(layers, sample["hash"])
    with store.Build(bases_folder, key, BASES_MADE_BY, profile=profile) as b:
        if b.current:
            return b.meta
        done = list(b.progress.get("layers_done", []))
        for layer in tqdm(layers, desc="bases per layer"):
            if layer in done:
                continue
            X, _ = open_sample(sample_folder, layer)
            relu = sample["sites"][layer]["relu"]  # a ReLU follows the layer in the network
            fitted = fit_bases(X, relu, chunk_size, desc=layer)
            if not float(np.sum(fitted["pca_pre_relu"].explained_variance_)) > 0:
                raise ValueError(
                    f"layer {layer!r} is constant over the sample ({len(X)} vectors, variance 0): there is "
                    "nothing to explain. Leave it out of layers (-p layers=...), or check the model's weights "
                    "(a zero-initialised layer is constant).")
            if relu and not float(np.sum(fitted["pca_post_relu"].explained_variance_)) > 0:
                log.warning("%s: every activation is <= 0, so the post-ReLU curve is left out", layer)
                del fitted["pca_post_relu"]
            for curve, basis in fitted.items():
                with store.atomic(b.partial / f"{layer}_{curve}.npz") as tmp, open(tmp, "wb") as f:
                    basis.save(f)
            done.append(layer)
            b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done)
        return b.commit(sorted(p.name for p in b.partial.glob("*.npz")))


def load_basis(bases_folder, layer: str, curve: str = "pca_pre_relu", key: dict | None = None):
    """Load one saved basis, e.g. ``load_basis(folder, "fc1", "neuron_pre_relu")``.

    ``key``: the key the bases must have (see :mod:`helpers.provenance`).
    """
    store.read_meta(bases_folder, key, BASES_MADE_BY)
    path = Path(bases_folder) / f"{layer}_{curve}.npz"
    if not path.exists():
        have = sorted(p.stem for p in Path(bases_folder).glob("*.npz"))
        raise FileNotFoundError(f"no basis {layer}_{curve} in {bases_folder} (it has {have}); rerun 02_pca.")
    cls = NeuronBasis if curve.startswith("neuron") else PCABasis
    return cls.load(path)


def explained_variance_table(bases_folder, layers, thresholds=(0.8, 0.99), key: dict | None = None):
    """Counts for 80 % / 99 % of the variance: DataFrame ``layer, d, curve, k80, k99``.

    Also returns ``{layer: {curve: explained_variance_ratio_}}`` for the figure.
    ``key``: the key the bases must have.
    """
    store.read_meta(bases_folder, key, BASES_MADE_BY)
    import pandas as pd

    rows, ratios = [], {}
    for layer in layers:
        ratios[layer] = {}
        for curve in ("pca_pre_relu", "pca_post_relu", "neuron_pre_relu"):
            path = Path(bases_folder) / f"{layer}_{curve}.npz"
            if not path.exists():
                continue
            ratio = load_basis(bases_folder, layer, curve).explained_variance_ratio_  # checked above
            ratios[layer][curve] = ratio
            k80, k99 = counts(ratio, thresholds)
            rows.append({"layer": layer, "d": len(ratio), "curve": curve, "k80": k80, "k99": k99})
    return pd.DataFrame(rows), ratios
