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

import numpy as np
import torch

from ._base import read_saved
from .moments import NotFittedError, _as_2d


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
