"""A held-out-query machine score of a basis vector (after Zimmermann, Klindt & Brendel, NeurIPS 2024).

The task, per basis vector and difficulty band ``q``: the eval patches whose code on the vector is in the
top ``q`` and in the bottom ``q`` form two pools; a task draws ``K + 1`` patches from each (without
replacement), shows the ``K`` most extreme of each draw as references (top and bottom) and holds out the
least extreme one of each as a query. An observer that sees only the patches assigns the queries: with a
similarity ``s`` and ``S(x, R)`` the mean similarity of patch ``x`` to the references ``R``,

    Δ = [S(q⁺, R⁺) − S(q⁺, R⁻)] − [S(q⁻, R⁺) − S(q⁻, R⁻)],

positive when both queries are nearer their own side. The score of a vector is the mean over its tasks of
``sigmoid(α Δ)`` (the published score; α = 0.16 was fitted to human choices with DreamSim's similarity), or
with ``α = None`` the share of tasks with ``Δ > 0`` (ties count one half), which needs no scale. A vector whose
top patches look alike, and unlike its bottom ones, scores near 1; one whose codes are unrelated to what
the patches show scores 0.5. Unlike the grid observer's ordered-vs-shuffled grids (whose adjacent columns
can share patches), the queries are never among the references.

Similarities (:func:`embedder`): ``pixels`` (minus the RMS difference of the thumbnails, in [0, 1]),
``model:<name>`` (cosine of another network's penultimate features: the input of its last linear layer)
and ``dreamsim`` (cosine of DreamSim's embeddings, when the package and its weights are installed).
"""
from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PUBLISHED_ALPHA = 0.16
"""α of the published score (the reference implementation's default), fitted with DreamSim's similarity."""


def alpha_for(similarity: str, alpha: float | None) -> float | None:
    """The α a score uses: the setting, else the published one for ``dreamsim`` and ``None`` (the hard
    choice) for the similarities whose scale it was not fitted on."""
    if alpha is not None:
        return float(alpha)
    return PUBLISHED_ALPHA if similarity == "dreamsim" else None


def band_tasks(codes, q: float, n_tasks: int, n_refs: int, rng: np.random.Generator) -> dict:
    """The patches of ``n_tasks`` tasks drawn from the top and bottom ``q`` of ``codes``.

    Parameters
    ----------
    codes : ndarray of shape (n,)
        The vector's code on each candidate patch.
    q : float
        The band: each pool holds the ``ceil(q n)`` largest (smallest) codes (ties: the lower index first).

    Returns
    -------
    dict
        ``top`` and ``bottom``: int64 arrays of shape (n_tasks, n_refs + 1) of indices into ``codes``;
        columns 0 … n_refs - 1 are the references, most extreme first; the last column is the query, the
        least extreme patch of the draw (held out).

    Raises
    ------
    ValueError
        When a pool holds fewer than ``n_refs + 1`` patches, or the two pools overlap (``q > 0.5``).
    """
    codes = np.asarray(codes, np.float64)
    n = len(codes)
    size = math.ceil(q * n)
    if size < n_refs + 1 or 2 * size > n:
        raise ValueError(f"mis_bands: the band q={q} of {n} patches holds {size} per side, and a task needs "
                         f"mis_references + 1 = {n_refs + 1} on each side of two disjoint pools; use a band in "
                         f"[{(n_refs + 1) / n:.3g}, 0.5], fewer mis_references, or index more patches (index_cap).")
    order = np.argsort(codes, kind="stable")
    bottom_pool, top_pool = order[:size], order[::-1][:size]
    out = {}
    for name, pool, sign in (("top", top_pool, -1.0), ("bottom", bottom_pool, 1.0)):
        drawn = np.stack([rng.choice(pool, n_refs + 1, replace=False) for _ in range(n_tasks)])
        out[name] = np.take_along_axis(drawn, np.argsort(sign * codes[drawn], axis=1, kind="stable"), axis=1)
    return out


def similarities(E: np.ndarray, a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """``s(E[a_i], E[b_ij])`` for ``a`` of shape (T,) and ``b`` of shape (T, K): shape (T, K), float64.

    ``kind``: ``"rms"`` (minus the root-mean-square difference) or ``"cosine"`` (rows of ``E`` unit-norm).
    """
    x, y = E[a][:, None, :].astype(np.float64), E[b].astype(np.float64)
    if kind == "rms":
        return -np.sqrt(np.mean((x - y) ** 2, axis=-1))
    if kind == "cosine":
        return np.sum(x * y, axis=-1)
    raise ValueError(f"similarity kind {kind!r} is unknown; use 'rms' or 'cosine'.")


def deltas(E: np.ndarray, tasks: dict, kind: str) -> np.ndarray:
    """Δ of every task (see the module docstring): ndarray of shape (n_tasks,).

    ``E``: embeddings indexed as the tasks' indices; ``kind``: as :func:`similarities`.
    """
    top, bottom = tasks["top"], tasks["bottom"]
    q_top, r_top, q_bottom, r_bottom = top[:, -1], top[:, :-1], bottom[:, -1], bottom[:, :-1]

    def S(q, R):
        return similarities(E, q, R, kind).mean(axis=1)

    return (S(q_top, r_top) - S(q_top, r_bottom)) - (S(q_bottom, r_top) - S(q_bottom, r_bottom))


def score(delta, alpha: float | None) -> float:
    """The mean of ``sigmoid(alpha Δ)``, or with ``alpha=None`` the share of ``Δ > 0`` (ties: one half)."""
    delta = np.asarray(delta, np.float64)
    if alpha is None:
        return float(np.mean(np.where(delta > 0, 1.0, np.where(delta == 0, 0.5, 0.0))))
    return float(np.mean(1 / (1 + np.exp(-alpha * delta))))


# -- similarities -------------------------------------------------------------------------------------
class Embedder:
    """Patches -> embeddings for one similarity: ``embed(patches)`` with patches uint8 (n, t, t, C) gives
    float32 (n, f); ``kind`` says how two embeddings compare (:func:`similarities`)."""

    name = "pixels"
    kind = "rms"

    def embed(self, patches: np.ndarray) -> np.ndarray:
        return np.asarray(patches, np.float32).reshape(len(patches), -1) / 255


class NetworkEmbedder(Embedder):
    """The input of a network's last linear layer (its penultimate features), unit-normalised.

    Patches are resized to the network's input size, given its channels (grey repeated, colour averaged)
    and normalised with its mean and std. Memory: one batch of ``batch_size`` inputs.
    """

    kind = "cosine"

    def __init__(self, name: str, model: nn.Module, size: int, channels: int, mean, std, device=None,
                 batch_size: int = 256):
        self.name, self.model, self.size, self.channels = name, model.eval(), int(size), int(channels)
        self.device = torch.device(device or "cpu")
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.batch_size = batch_size
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not heads:
            raise ValueError(f"mis_similarity='model:{name}': the network has no linear layer whose input would be "
                             "its penultimate features; use another network or mis_similarity='pixels'.")
        self.head = heads[-1]

    def _inputs(self, patches: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float() / 255
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True).expand(-1, self.channels, -1, -1) if self.channels in (1, 3) else x
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                      align_corners=False)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def embed(self, patches: np.ndarray) -> np.ndarray:
        features = []
        hook = self.head.register_forward_pre_hook(lambda m, args: features.append(args[0].flatten(1).float()))
        try:
            for start in range(0, len(patches), self.batch_size):
                self.model(self._inputs(patches[start:start + self.batch_size]))
        finally:
            hook.remove()
        f = torch.cat(features) if features else torch.zeros((0, self.head.in_features))
        return nn.functional.normalize(f, dim=1).cpu().numpy()


DREAMSIM_FILES = ("dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                  "ensemble_lora")
"""What DreamSim's ensemble (dreamsim 0.2) loads from its cache folder: three backbones and the LoRA weights."""

DREAMSIM_URL = ("https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
                "dreamsim_ensemble_checkpoint.zip")
"""The archive dreamsim 0.2 downloads and unzips into its cache folder on first use."""


def dreamsim_cache() -> Path:
    """DreamSim's weights folder: ``dreamsim/`` in torch's hub folder (``$TORCH_HOME/hub``)."""
    return Path(torch.hub.get_dir()) / "dreamsim"


def _fetch_dreamsim() -> None:
    from dreamsim.model import download_weights

    dreamsim_cache().parent.mkdir(parents=True, exist_ok=True)
    download_weights(cache_dir=str(dreamsim_cache()), dreamsim_type="ensemble")


def similarity_needs(p) -> list:
    """What 06's similarity needs that is not here (:func:`helpers.pipeline.provenance.register_need`): the
    dreamsim package and its weights, or the weights of another network (``model:<name>``).

    Raises
    ------
    ValueError
        For a ``model:<name>`` that names no model (with close names) or the explained one.
    """
    from ..models.loading import weights_needs
    from ..models.registry import spec
    from ..pipeline.provenance import Missing

    similarity, where = p.mis_similarity, f"setting mis_similarity={p.mis_similarity!r} (profile {p.name})"
    if similarity.startswith("model:"):
        try:
            spec(similarity[6:])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return weights_needs(similarity[6:])
    if similarity != "dreamsim":
        return []
    other = "or give -p mis_similarity=pixels (or model:<name>) to score with another similarity"
    if importlib.util.find_spec("dreamsim") is None:
        return [Missing("DreamSim", f"the dreamsim package is not installed ({where}, 06's held-out-query score)",
                        f"pip install -e '.[paper]' (make paper installs it), {other}")]
    cache = dreamsim_cache()
    lacking = [f for f in DREAMSIM_FILES if not (cache / f).exists()]
    if lacking:
        return [Missing("DreamSim's weights", f"not in {cache} (no {lacking[0]})",
                        f"download {DREAMSIM_URL} and unzip it into {cache}, {other}", fetch=_fetch_dreamsim)]
    return []


class DreamSimEmbedder(NetworkEmbedder):
    """DreamSim's embedding (the ``dreamsim`` package's ensemble, its weights in :func:`dreamsim_cache`),
    unit-normalised."""

    def __init__(self, device=None, batch_size: int = 64):
        try:
            from dreamsim import dreamsim
        except ImportError:
            raise ValueError("mis_similarity='dreamsim' needs the dreamsim package and its weights: "
                             "pip install -e '.[paper]' (its first use downloads the weights into "
                             f"{dreamsim_cache()}), or use mis_similarity='pixels' or 'model:<name>'.") from None
        self.name, self.device, self.batch_size = "dreamsim", torch.device(device or "cpu"), batch_size
        try:
            self.model, self.preprocess = dreamsim(pretrained=True, device=str(self.device),
                                                   cache_dir=str(dreamsim_cache()), dreamsim_type="ensemble")
        except Exception as e:  # noqa: BLE001 - a missing or unreachable weights file, whatever raises it
            raise ValueError(f"mis_similarity='dreamsim': its weights could not be loaded ({type(e).__name__}: "
                             f"{e}); download {DREAMSIM_URL} and unzip it into {dreamsim_cache()}, or use "
                             "mis_similarity='pixels'.") from None

    @torch.no_grad()
    def embed(self, patches: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = []
        for start in range(0, len(patches), self.batch_size):
            batch = [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p).convert("RGB")
                     for p in patches[start:start + self.batch_size]]
            x = torch.cat([self.preprocess(im) for im in batch]).to(self.device)
            out.append(nn.functional.normalize(self.model.embed(x).float(), dim=1).cpu())
        return torch.cat(out).numpy()


def embedder(similarity: str, profile=None, device=None) -> Embedder:
    """The :class:`Embedder` of a ``mis_similarity`` setting.

    ``model:<name>`` loads that network as a profile would (its shipped or named weights, never trained
    here) and refuses the profile's own network.
    """
    if similarity == "pixels":
        return Embedder()
    if similarity == "dreamsim":
        return DreamSimEmbedder(device)
    if similarity.startswith("model:"):
        from ..models.loading import load_model
        from ..models.registry import preprocessing, spec
        from ..pipeline.settings import load_profile

        name = similarity.split(":", 1)[1]
        if profile is not None and name == profile.model:
            raise ValueError(f"mis_similarity={similarity!r} is the network being explained; use another one.")
        p = load_profile(profile.name if profile is not None else "quick", model=name, layers=None, retrain=False,
                         seed=profile.seed if profile is not None else 0)
        model, _ = load_model(p, device=device or "cpu", train=False)
        s = spec(name)
        if (s.channels or 3) == 1:
            from ..images.fashion import FASHION_MEAN, FASHION_STD

            size, mean, std = 28, [FASHION_MEAN], [FASHION_STD]
        else:
            pre = preprocessing(name)
            size, mean, std = pre.crop_size[0], list(pre.mean), list(pre.std)
        log.info("machine score: similarity of %s's penultimate features", name)
        return NetworkEmbedder(name, model, size, s.channels or 3, mean, std, device=device or "cpu")
    raise ValueError(f"mis_similarity={similarity!r} is unknown; use 'pixels', 'model:<name>' or 'dreamsim'.")
