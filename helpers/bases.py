"""Step 2 of the method: bases of a layer's activation space, ordered by importance.

:class:`PCABasis` and :class:`NeuronBasis` follow scikit-learn's estimator API
(``fit``, ``partial_fit``, ``transform``, ``inverse_transform``, learned
attributes ending in ``_``). Both rest on :class:`~helpers.moments.StreamingMoments`:
the mean and covariance accumulated in float64 over chunks, so the data never
has to fit in memory and streaming equals one shot. The bases the paper names
as future work (:mod:`helpers.factor`: ICA, NMF; :mod:`helpers.sae`: a TopK
sparse autoencoder) share the API; :data:`KINDS` describes each kind once.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import keys, store
from .moments import NotFittedError, StreamingMoments, _as_2d  # noqa: F401 (re-exported)

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

    # -- the common API of every basis (helpers.factor, helpers.sae) --------------
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


@dataclass(frozen=True)
class Kind:
    """What a kind of basis is, said once: every caller reads it here.

    ``relu``: fitted on the post-ReLU activations (only layers followed by a
    ReLU have it); ``signed``: its codes take both signs, so each vector is
    read in both directions (08); ``unit``: what one vector is called.
    """

    name: str
    label: str
    unit: str
    relu: bool = False
    signed: bool = False

    @property
    def curve(self) -> str:
        """Its curve and file name: ``<name>_pre_relu`` or ``<name>_post_relu``."""
        return f"{self.name}_{'post' if self.relu else 'pre'}_relu"


KINDS = {
    "pca": Kind("pca", "PCA", "PC", signed=True),
    "neuron": Kind("neuron", "neurons", "neuron"),
    "ica": Kind("ica", "ICA", "IC", signed=True),
    "nmf": Kind("nmf", "NMF", "NMF", relu=True),
    "sae": Kind("sae", "SAE", "latent"),
}
"""The bases a profile can fit (setting ``bases``), in display order."""


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


def learned_settings(p, kinds=None) -> dict:
    """The settings of the learned bases a profile fits: ``{kind: {setting: value}}`` (part of their key)."""
    kinds = p.bases if kinds is None else kinds
    every = {"ica": {"n_components": p.ica_components, "seed": p.seed},
             "nmf": {"n_components": p.nmf_components, "seed": p.seed},
             "sae": {"n_latents": p.sae_latents, "k": p.sae_k, "epochs": p.sae_epochs, "seed": p.seed}}
    return {k: every[k] for k in kinds if k in every}


def _learned(kind: str, settings: dict, n: int, device=None):
    """An unfitted ICA, NMF or SAE basis with its settings, for a sample of ``n`` vectors."""
    if kind == "ica":
        from .factor import ICABasis

        return ICABasis(settings["n_components"], seed=settings["seed"])
    if kind == "nmf":
        from .factor import NMFBasis

        return NMFBasis(settings["n_components"], seed=settings["seed"])
    from .sae import SAEBasis

    return SAEBasis(settings["n_latents"], settings["k"], epochs=settings["epochs"], seed=settings["seed"],
                    batch_size=sae_batch(n), device=device)


def sae_batch(n: int) -> int:
    """The SAE's minibatch for a sample of ``n`` vectors: ``n / 100`` within [256, 4096], so that a
    small sample still gets about 100 optimiser steps per epoch (the quick profile: 600 vectors per step)."""
    return int(min(4096, max(256, n // 100)))


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


BASES_MADE_BY = "02_pca (python -m helpers.run --only 02)"
SOURCES = ("bases", "moments", "factor", "sae")


def bases_key(layers, sample_hash: str, kinds=("pca", "neuron"), settings: dict | None = None) -> dict:
    """What the bases are made from: the layers, the kinds and their settings, the sample (its hash)."""
    return keys.key({"layers": list(layers), "bases": list(kinds), "learned": settings or {}},
                    {"sample": sample_hash}, SOURCES)


def fit_layer_bases(sample_folder, bases_folder, layers, chunk_size: int = 16384,
                    profile: str = "", sample_key: dict | None = None, kinds=("pca", "neuron"),
                    settings: dict | None = None, device=None) -> dict:
    """Fit and save the bases of every layer of a sample, and their Fig. 5 curves (notebook 02).

    Writes ``<layer>_<curve>.npz`` per layer and basis and ``<layer>_curves.npz``
    (:func:`explained_curve` of each) into ``bases_folder``; layers finished
    before an interruption are kept, and an SAE resumes from its last epoch.
    ``kinds``: names in :data:`KINDS` (``pca`` always: the index and ICA use it;
    the PCA of the post-ReLU activations comes with it); ``settings``:
    :func:`learned_settings`. ``sample_key`` is the key the sample must have
    (a stale sample is refused). Memory: as :func:`fit_bases` and
    :func:`explained_curve`, plus the learned bases' own bounds.

    Returns
    -------
    dict
        The sidecar of the bases artifact.
    """
    from .sampling import MADE_BY as SAMPLE_MADE_BY
    from .sampling import open_sample

    unknown = [k for k in kinds if k not in KINDS]
    if unknown or "pca" not in kinds:
        raise ValueError(f"bases={list(kinds)} is not valid: use names from {list(KINDS)}, pca among them "
                         "(e.g. bases='pca,neuron,sae').")
    settings = settings or {}
    sample = store.read_meta(sample_folder, sample_key, SAMPLE_MADE_BY)
    key = bases_key(layers, sample["hash"], kinds, settings)
    with store.Build(bases_folder, key, BASES_MADE_BY, profile=profile) as b:
        if b.current:
            return b.meta
        done = list(b.progress.get("layers_done", []))
        for layer in tqdm(layers, desc="bases per layer"):
            if layer not in done:
                X, _ = open_sample(sample_folder, layer)
                _fit_layer(b.partial, layer, X, sample["sites"][layer]["relu"], kinds, settings, chunk_size, device)
                done.append(layer)
                b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done)
        return b.commit(sorted(p.name for p in b.partial.glob("*.npz")))


def _fit_layer(folder, layer, X, relu, kinds, settings, chunk_size, device) -> None:
    fitted = fit_bases(X, relu, chunk_size, desc=layer)  # relu: a ReLU follows the layer in the network
    if not float(np.sum(fitted["pca_pre_relu"].explained_variance_)) > 0:
        raise ValueError(
            f"layer {layer!r} is constant over the sample ({len(X)} vectors, variance 0): there is "
            "nothing to explain. Leave it out of layers (-p layers=...), or check the model's weights "
            "(a zero-initialised layer is constant).")
    if relu and not float(np.sum(fitted["pca_post_relu"].explained_variance_)) > 0:
        log.warning("%s: every activation is <= 0, so the post-ReLU curve is left out", layer)
        del fitted["pca_post_relu"]
    if "neuron" not in kinds:
        del fitted["neuron_pre_relu"]
    for kind in kinds:
        if kind not in settings:
            continue
        if KINDS[kind].relu and "pca_post_relu" not in fitted:
            log.info("%s: no %s basis, it needs the positive activations before a ReLU", layer, kind)
            continue
        basis = _learned(kind, settings[kind], len(X), device)
        checkpoint = folder / f"{layer}_{kind}.checkpoint.pt"
        if kind == "ica":
            basis.fit(X, pca=fitted["pca_pre_relu"], chunk_size=chunk_size)
        elif kind == "sae":
            basis.fit(X, checkpoint=checkpoint, desc=f"SAE {layer}")
        else:
            basis.fit(X)
        fitted[KINDS[kind].curve] = basis
    curves = {c: explained_curve(basis, X, relu=c.endswith("_post_relu"), chunk_size=chunk_size)
              for c, basis in fitted.items()}
    for curve, basis in fitted.items():
        with store.atomic(folder / f"{layer}_{curve}.npz") as tmp, open(tmp, "wb") as f:
            basis.save(f)
    with store.atomic(folder / f"{layer}_curves.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **curves)
    for checkpoint in folder.glob(f"{layer}_*.checkpoint.pt"):
        checkpoint.unlink()


def _class(curve: str):
    kind = curve.split("_")[0]
    if kind in ("ica", "nmf"):
        from . import factor

        return getattr(factor, f"{kind.upper()}Basis")
    if kind == "sae":
        from .sae import SAEBasis

        return SAEBasis
    return NeuronBasis if kind == "neuron" else PCABasis


def load_basis(bases_folder, layer: str, curve: str = "pca_pre_relu", key: dict | None = None):
    """Load one saved basis, e.g. ``load_basis(folder, "fc1", "neuron_pre_relu")``.

    ``curve``: a file's curve name or a kind (``"sae"`` reads ``sae_pre_relu``);
    ``key``: the key the bases must have (see :mod:`helpers.provenance`).
    """
    store.read_meta(bases_folder, key, BASES_MADE_BY)
    curve = KINDS[curve].curve if curve in KINDS else curve
    path = Path(bases_folder) / f"{layer}_{curve}.npz"
    if not path.exists():
        have = sorted(p.stem for p in Path(bases_folder).glob(f"{layer}_*.npz") if not p.stem.endswith("curves"))
        raise FileNotFoundError(f"no basis {layer}_{curve} in {bases_folder} (it has {have}); rerun 02_pca "
                                "with that basis in the setting bases.")
    return _class(curve).load(path)


def layer_bases(bases_folder, layer: str, kinds, key: dict | None = None) -> dict:
    """``{kind: fitted basis}`` of a layer for each of ``kinds`` that it has (NMF needs a ReLU after it)."""
    store.read_meta(bases_folder, key, BASES_MADE_BY)
    return {k: load_basis(bases_folder, layer, k) for k in kinds
            if (Path(bases_folder) / f"{layer}_{KINDS[k].curve}.npz").exists()}


def explained_variance_table(bases_folder, layers, thresholds=(0.8, 0.99), key: dict | None = None):
    """Counts for 80 % / 99 % of the variance: DataFrame ``layer, d, curve, k80, k99, n_vectors``.

    Also returns ``{layer: {curve: R²(k) for k = 1 …}}`` (:func:`explained_curve`)
    for the figure. A count is missing (NA) where the curve never reaches it
    (e.g. 64 ICs of a wider layer). ``key``: the key the bases must have.
    """
    store.read_meta(bases_folder, key, BASES_MADE_BY)
    import pandas as pd

    order = ("pca_pre_relu", "pca_post_relu", *(k.curve for k in KINDS.values() if k.name != "pca"))
    rows, curves = [], {}
    for layer in layers:
        path = Path(bases_folder) / f"{layer}_curves.npz"
        try:
            with np.load(path) as f:
                found = {c: f[c] for c in order if c in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise store.CorruptArtifactError(f"{path} is corrupt or missing ({type(e).__name__}: {e}); delete "
                                             f"{bases_folder} and rerun {BASES_MADE_BY}.") from None
        curves[layer] = found
        d = len(found["pca_pre_relu"])
        for curve, values in found.items():
            k80, k99 = curve_counts(values, thresholds)
            rows.append({"layer": layer, "d": d, "curve": curve, "k80": k80, "k99": k99, "n_vectors": len(values)})
    table = pd.DataFrame(rows)
    return table.astype({"k80": "Int64", "k99": "Int64"}), curves
