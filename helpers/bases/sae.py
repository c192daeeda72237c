"""A basis of a layer's activation space learned by a TopK sparse autoencoder (Gao et al. 2024).

:class:`SAEBasis` has the API of the bases in :mod:`helpers.bases`. On inputs
normalised by the data's mean and one global scale (``E||x_n||**2 = d``),
``z = TopK(ReLU(W_enc (x_n - b_dec) + b_enc))`` and ``x_n ~ z W_dec + b_dec``
with unit-norm decoder rows, trained on the MSE plus the AuxK loss of the dead
latents. Codes are reported in the units of ``X``:
``X ~ offset_ + transform(X) @ components_``. Memory: the model, Adam's state
and a few minibatches, whatever ``n`` (``X`` is streamed).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..pipeline import store
from .moments import NotFittedError, _as_2d

_LEARNED = ("components_", "explained_variance_", "explained_variance_ratio_", "mean_", "offset_",
            "code_mean_", "baseline_", "dead_", "encoder_weight_", "encoder_bias_", "scale_", "n_samples_seen_")


_SETTINGS = ("n_latents", "k", "expansion", "epochs", "batch_size", "lr", "seed", "dead_after", "aux_k", "aux_coef")


_CHUNK_VALUES = 1 << 22  # values per chunk of a streamed pass (32 MiB in float64)


def _rows(d: int) -> int:
    return max(1, _CHUNK_VALUES // max(d, 1))


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest entries of each row, zero the rest."""
    values, idx = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, idx, values)


class _TopKSAE(torch.nn.Module):
    """The autoencoder on normalised inputs; weights are (n_latents, d), encoder initialised as the decoder."""

    def __init__(self, d: int, n_latents: int, k: int, generator: torch.Generator):
        super().__init__()
        W = torch.randn(n_latents, d, generator=generator)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec, self.W_enc = torch.nn.Parameter(W), torch.nn.Parameter(W.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.k = k

    def forward(self, x):
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        z = _topk(pre, self.k)
        return z @ self.W_dec + self.b_dec, pre, z


def _aux_loss(model, pre, dead, residual, aux_k):
    """AuxK: the residual reconstructed by the ``aux_k`` most active dead latents, as a fraction of its variance.

    With no dead latent every selected value is 0, so the loss adds no gradient (and needs no device sync).
    """
    values, idx = (pre * dead).topk(aux_k, dim=1)
    estimate = torch.zeros_like(pre).scatter(1, idx, values) @ model.W_dec
    spread = (residual - residual.mean(0)).pow(2).mean().clamp_min(1e-12)
    return (estimate - residual).pow(2).mean() / spread


def _step(model, opt, x, since, cfg):
    """One Adam step; returns the batch's MSE (fraction of variance unexplained) and updates ``since``."""
    recon, pre, z = model(x)
    error = x - recon
    mse = error.pow(2).mean()
    dead = since >= cfg["dead_after"]
    loss = mse + cfg["aux_coef"] * _aux_loss(model, pre, dead, error.detach(), cfg["aux_k"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        W, g = model.W_dec, model.W_dec.grad
        g -= (g * W).sum(1, keepdim=True) * W  # keep the step tangent to the unit sphere
        opt.step()
        W /= W.norm(dim=1, keepdim=True)
        since += len(x)
        since[(z > 0).any(0)] = 0
    return mse.detach()


def _moments(X) -> tuple[np.ndarray, float]:
    """Mean and total variance (trace of the covariance, ``n - 1``) of ``X``, streamed, in float64."""
    n, d = X.shape
    step = _rows(d)
    shift = np.asarray(X[:step], np.float64).mean(0)
    s1, s2 = np.zeros(d), np.zeros(d)
    for start in range(0, n, step):
        c = np.asarray(X[start:start + step], np.float64) - shift
        s1 += c.sum(0)
        s2 += np.einsum("ij,ij->j", c, c)
    return shift + s1 / n, float(np.sum(s2 - s1 ** 2 / n) / (n - 1))


def _fingerprint(X) -> dict:
    """Cheap identity of the data: its shape and a hash of 16 rows spread over it."""
    n, d = X.shape
    idx = np.unique(np.linspace(0, n - 1, 16).astype(np.int64))
    digest = hashlib.sha256(np.ascontiguousarray(X[idx], np.float32).tobytes()).hexdigest()
    return {"n": int(n), "d": int(d), "rows_sha256": digest}


def _check_data(X):
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    if X.ndim != 2:
        _as_2d(X, None)  # raises the package's message
    if len(X) < 2:
        raise ValueError(f"X has {len(X)} rows; fit an SAEBasis on at least 2 activation vectors.")
    return X


def _learned(name: str) -> property:
    def get(self):
        if self._fitted is None:
            raise NotFittedError(f"this SAEBasis is not fitted yet; call fit(X) or SAEBasis.load(path) "
                                 f"before reading {name}.")
        return self._fitted[name]
    return property(get)


class SAEBasis:
    """Decoder directions of a TopK sparse autoencoder, ordered by the variance of their codes.

    Parameters
    ----------
    n_latents : int, optional
        Number of latents (default ``expansion * d``); ``k`` of them are active per vector.
    epochs, batch_size, lr : int, int, float
        Adam on minibatches of ``batch_size`` rows for ``epochs`` passes; take enough epochs for a few
        thousand steps (``epochs * n / batch_size``).
    seed : int
        Seeds the initialisation and each epoch's order (same seed and data: same basis, bit for bit on CPU).
    device : str or torch.device, optional
        Where to train: default CUDA when available, else CPU (resolved by ``fit``).
    dead_after : int, optional
        A latent is dead once it has not fired for this many training vectors (default: the smaller of
        Gao et al.'s 10 million and ``n // 2``, so that AuxK also acts on a small sample).
    aux_k, aux_coef : int (optional), float
        The AuxK loss: the residual reconstructed by the ``aux_k`` most active dead latents (default
        ``d // 2``, as Gao et al.'s 512 for d = 768), weighted by ``aux_coef`` (Gao et al.: 1/32).

    Attributes
    ----------
    components_ : ndarray of shape (n_latents, d)
        Unit decoder rows, by descending ``explained_variance_``; dead latents last.
    explained_variance_, explained_variance_ratio_ : ndarray of shape (n_latents,)
        Variance (``n - 1``) of each code over the fit data, the variance its reconstruction
        ``z_j * w_j`` carries; and its fraction of the total variance of ``X``.
    mean_, offset_ : ndarray of shape (d,)
        Mean of ``X``; the decoder bias in the units of ``X`` (``X ~ offset_ + codes @ components_``).
    code_mean_, baseline_, dead_ : ndarray of shape (n_latents,)
        Mean code over the fit data; zeros, the code of an ablated latent; latents that never fired.
    encoder_weight_, encoder_bias_ : ndarray of shape (n_latents, d) and (n_latents,)
        ``codes = TopK(ReLU((X - offset_) @ encoder_weight_.T + encoder_bias_))``.
    scale_ : float
        The normalisation's global scale: ``E||X - mean_||**2 = d * scale_**2``.
    n_features_in_, n_samples_seen_, n_components : int
    """

    def __init__(self, n_latents: int | None = None, k: int = 16, *, expansion: int = 4, epochs: int = 10,
                 batch_size: int = 4096, lr: float = 1e-3, seed: int = 0, device=None,
                 dead_after: int | None = None, aux_k: int | None = None, aux_coef: float = 1 / 32):
        self.n_latents, self.k, self.expansion, self.epochs = n_latents, k, expansion, epochs
        self.batch_size, self.lr, self.seed, self.device = batch_size, lr, seed, device
        self.dead_after, self.aux_k, self.aux_coef = dead_after, aux_k, aux_coef
        self._fitted, self._cache = None, {}

    n_features_in_ = property(lambda self: self.components_.shape[1])

    @property
    def n_components(self) -> int | None:
        """Number of latents (``n_latents``, resolved once fitted)."""
        return self._fitted["components_"].shape[0] if self._fitted is not None else self.n_latents

    def _settings(self, n: int, d: int) -> dict:
        """The resolved settings that shape the training (checked when resuming)."""
        n_latents = self.n_latents or self.expansion * d
        if not 1 <= self.k <= n_latents:
            raise ValueError(f"k={self.k} must be between 1 and n_latents={n_latents}; pass a smaller k.")
        return {"n_latents": int(n_latents), "k": int(self.k), "epochs": int(self.epochs),
                "batch_size": int(self.batch_size), "lr": float(self.lr), "seed": int(self.seed),
                "dead_after": int(self.dead_after or min(10_000_000, max(n // 2, 1))),
                "aux_k": int(min(self.aux_k or max(d // 2, 1), n_latents)), "aux_coef": float(self.aux_coef)}

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, y=None, *, checkpoint=None, desc: str = "SAE", _stop_after: int | None = None) -> "SAEBasis":
        """Train on ``X`` of shape (n, d) (an array or memory map, streamed), then measure the codes.

        ``checkpoint``: a file saved after every epoch; a later fit with the same settings and data
        resumes after its last epoch (the result equals an uninterrupted run's). ``_stop_after``
        (for tests): stop after that many epochs, unfitted.
        """
        X = _check_data(X)
        n, d = X.shape
        cfg = self._settings(n, d)
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = _TopKSAE(d, cfg["n_latents"], cfg["k"], torch.Generator().manual_seed(cfg["seed"])).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        data = _fingerprint(X)
        state = _resume(checkpoint, cfg, data, model, opt, device)
        if state is None:
            mean, total = _moments(X)
            if not total > 0:
                raise ValueError(f"X is constant over its {n} rows (variance 0): there is nothing to encode.")
            state = {"epoch": 0, "mean": torch.from_numpy(mean), "total_variance": total,
                     "scale": float(np.sqrt(total * (n - 1) / n / d)),  # E||x - mean||^2 = d scale^2
                     "since_fired": torch.zeros(cfg["n_latents"], dtype=torch.long, device=device)}
        state.update(settings=cfg, data=data)
        self._fitted = None
        if not self._train(X, model, opt, state, checkpoint, _stop_after, desc, device):
            return self
        self._measure(X, model, state, device)
        return self

    def _train(self, X, model, opt, state, checkpoint, stop_after, desc, device) -> bool:
        """Run the remaining epochs, checkpointing after each; False if stopped early."""
        cfg, n = state["settings"], len(X)
        mean, scale = state["mean"].to(device, torch.float32), state["scale"]
        bs, batches = cfg["batch_size"], -(-n // cfg["batch_size"])
        since = state["since_fired"].to(device)
        with tqdm(total=cfg["epochs"] * batches, initial=state["epoch"] * batches, desc=desc, leave=False) as bar:
            for epoch in range(state["epoch"], cfg["epochs"]):
                if stop_after is not None and epoch >= stop_after:
                    return False
                order = np.random.default_rng([cfg["seed"], epoch]).permutation(n)
                total = torch.zeros((), device=device)
                for start in range(0, n, bs):
                    rows = np.asarray(X[np.sort(order[start:start + bs])], np.float32)
                    x = (torch.from_numpy(rows).to(device) - mean) / scale
                    total += _step(model, opt, x, since, cfg) * len(x)
                    bar.update()
                bar.set_postfix(epoch=epoch + 1, fvu=f"{float(total) / n:.4f}",
                                dead=int((since >= cfg["dead_after"]).sum()))
                state.update(epoch=epoch + 1, since_fired=since)
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, model, opt, state)
        return True

    def _measure(self, X, model, state, device) -> None:
        """Set the learned attributes from the model, measure each code over ``X``, sort the latents."""
        n, scale, mean = len(X), state["scale"], state["mean"].double().cpu().numpy()
        p = {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}
        self._set({"components_": p["W_dec"], "mean_": mean, "offset_": mean + scale * p["b_dec"],
                   "encoder_weight_": p["W_enc"], "encoder_bias_": scale * p["b_enc"], "scale_": scale,
                   "n_samples_seen_": n})
        s1, s2, dead = self._code_sums(X, device)
        m = len(s1)
        variance = np.clip((s2 - s1 ** 2 / n) / (n - 1), 0, None)
        order = np.lexsort((-variance, dead))  # live by descending variance, then dead; stable
        f = self._fitted
        self._set({**f, "components_": f["components_"][order], "encoder_weight_": f["encoder_weight_"][order],
                   "encoder_bias_": f["encoder_bias_"][order], "explained_variance_": variance[order],
                   "explained_variance_ratio_": variance[order] / state["total_variance"],
                   "code_mean_": s1[order] / n, "baseline_": np.zeros(m), "dead_": dead[order]})

    def _code_sums(self, X, device):
        """Sum and sum of squares (float64) of each code over ``X``, streamed in float32; and which never fired."""
        m, step = self.n_components, _rows(self.n_features_in_)
        s1, s2 = (torch.zeros(m, dtype=torch.float64, device=device) for _ in range(2))
        fired = torch.zeros(m, dtype=torch.bool, device=device)
        with torch.no_grad():
            for start in range(0, len(X), step):
                codes = self.encode(torch.tensor(X[start:start + step], dtype=torch.float32, device=device))
                s1 += codes.sum(0, dtype=torch.float64)
                s2 += codes.double().pow(2).sum(0)
                fired |= (codes > 0).any(0)
        return s1.cpu().numpy(), s2.cpu().numpy(), ~fired.cpu().numpy()

    def _set(self, fitted: dict) -> None:
        self._fitted, self._cache = fitted, {}

    # -- transforms ------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """Codes of ``rows`` (tensor of shape (m, d), any device and float dtype): (m, n_latents), same device/dtype."""
        d = self.n_features_in_
        if not torch.is_tensor(rows) or rows.ndim != 2 or rows.shape[1] != d or not rows.is_floating_point():
            got = tuple(rows.shape) if torch.is_tensor(rows) else type(rows).__name__
            raise ValueError(f"rows must be a float tensor of shape (m, {d}); got {got}. "
                             "Use transform for numpy arrays.")
        key = (rows.device, rows.dtype)
        if key not in self._cache:
            self._cache[key] = [torch.as_tensor(self._fitted[name], dtype=rows.dtype, device=rows.device)
                                for name in ("encoder_weight_", "encoder_bias_", "offset_")]
        W, b, offset = self._cache[key]
        return _topk(torch.relu((rows - offset) @ W.T + b), self.k)

    def transform(self, X) -> np.ndarray:
        """Codes of ``X`` (m, d) in the units of ``X``, float64 of shape (m, n_latents)."""
        X = _as_2d(X, self.n_features_in_)
        out = np.empty((len(X), self.n_components))
        step = _rows(max(self.n_components, X.shape[1]))
        for start in range(0, len(X), step):
            out[start:start + step] = self.encode(torch.tensor(X[start:start + step], dtype=torch.float64)).numpy()
        return out

    def inverse_transform(self, Z) -> np.ndarray:
        """Back to activation space: ``offset_ + Z @ components_``, shape (m, d)."""
        Z = _as_2d(Z, self.n_components, "Z")
        return self.offset_ + Z @ self.components_

    # -- persistence -----------------------------------------------------------
    def save(self, path) -> None:
        """Save the settings and every learned attribute to an ``.npz`` file (a path, kept as is, or a file)."""
        settings = {name: getattr(self, name) for name in _SETTINGS}
        fields = dict(kind=type(self).__name__, settings=json.dumps(settings, default=lambda v: v.item()),
                      **{name: getattr(self, name) for name in _LEARNED})
        if isinstance(path, (str, os.PathLike)):
            with open(path, "wb") as f:  # np.savez would append .npz to another name
                np.savez(f, **fields)
        else:
            np.savez(path, **fields)

    @classmethod
    def load(cls, path) -> "SAEBasis":
        """Load a basis saved with :meth:`save`."""
        from ._base import read_saved

        def build(data):
            basis = cls(**json.loads(str(data["settings"])))
            basis._set({name: data[name] for name in _LEARNED})
            basis._fitted.update(scale_=float(data["scale_"]), n_samples_seen_=int(data["n_samples_seen_"]))
            return basis

        return read_saved(path, cls.__name__, build)


for _name in _LEARNED:  # documented in the class; NotFittedError before fit
    setattr(SAEBasis, _name, _learned(_name))


# -- checkpoints -----------------------------------------------------------------
def _save_checkpoint(path, model, opt, state) -> None:
    """Save the training state after an epoch, atomically (tensors, numbers, strings and dicts only)."""
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), **state}
    with store.atomic(path) as tmp:
        torch.save(payload, tmp)


def _resume(path, cfg, data, model, opt, device) -> dict | None:
    """Load a checkpoint made with the same settings and data into ``model`` and ``opt``; None if there is none."""
    if path is None or not Path(path).exists():
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise store.CorruptArtifactError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                                         "delete it and fit again.") from None
    for what, now in (("settings", cfg), ("data", data)):
        if saved.get(what) != now:
            diff = {k: (saved.get(what, {}).get(k), now.get(k)) for k in now
                    if saved.get(what, {}).get(k) != now.get(k)}
            listed = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise ValueError(f"checkpoint {path} was made with other {what} ({listed}); delete it to train "
                             f"afresh, or fit with the {what} it was made with to resume.")
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    return {k: saved[k] for k in ("epoch", "mean", "total_variance", "scale", "since_fired")}
