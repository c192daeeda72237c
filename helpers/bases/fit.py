"""Fitting a profile's bases (02): every kind of every layer from the sample, streamed, one layer at a
time (an interrupted fit resumes), and reading them back for the later steps.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..pipeline import costs, provenance, store
from ..sampling import MADE_BY as SAMPLE_MADE_BY
from ..sampling import open_sample
from ._base import BASES_MADE_BY
from .curves import curve_counts, explained_curve
from .kinds import KINDS
from .moments import StreamingMoments, _as_2d, _upload
from .pca import NeuronBasis, PCABasis
from .rotation import RandomBasis

log = logging.getLogger(__name__)


def fit_bases(X, post_relu: bool = True, chunk_size: int = 16384, desc: str = "fit bases", device=None,
              random_seed: int | None = None) -> dict:
    """Fit the paper's bases of one layer in a single pass over its sample.

    Parameters
    ----------
    X : ndarray or memory map of shape (n, d)
        Pre-ReLU activations.
    post_relu : bool
        Also fit the PCA of ``relu(X)`` (not for a layer without ReLU).
    device : str or torch.device, optional
        Moments on the device when it is a GPU (each chunk uploaded once, its
        ReLU taken there; float64 sums); numpy's BLAS path on the CPU and for
        ``None``.
    random_seed : int, optional
        Also the random orthonormal basis of this seed (:class:`RandomBasis`), on the same moments.

    Returns
    -------
    dict
        ``pca_pre_relu``, ``neuron_pre_relu`` (sharing one set of moments) and,
        if asked, ``pca_post_relu`` and ``random_pre_relu``.

    Notes
    -----
    Memory: two ``d x d`` float64 sums plus one chunk, whatever ``n`` (on the
    GPU, the sums and the chunk are there).
    """
    gpu = _gpu(device)
    pre, post = StreamingMoments(gpu), StreamingMoments(gpu)
    relu = None
    for start in tqdm(range(0, len(X), chunk_size), desc=desc, leave=False):
        chunk = np.asarray(X[start:start + chunk_size])
        if gpu is not None:
            chunk = _upload(_as_2d(chunk, None), gpu).to(gpu, non_blocking=True)
            pre.partial_fit(chunk)
            if post_relu:
                post.partial_fit(chunk.clamp_min(0))
            continue
        pre.partial_fit(chunk)
        if post_relu:
            relu = np.empty_like(chunk) if relu is None or len(relu) < len(chunk) else relu
            post.partial_fit(np.maximum(chunk, 0, out=relu[: len(chunk)]))
    pre.release(), post.release()
    bases = {"pca_pre_relu": PCABasis.from_moments(pre), "neuron_pre_relu": NeuronBasis.from_moments(pre)}
    if random_seed is not None:
        bases["random_pre_relu"] = RandomBasis.from_moments(pre, seed=random_seed)
    if post_relu:
        bases["pca_post_relu"] = PCABasis.from_moments(post)
    return bases


def _gpu(device):
    """``device`` as a ``torch.device`` when it is a GPU, else None (numpy's path)."""
    if device is None:
        return None
    import torch

    device = torch.device(device)
    return device if device.type == "cuda" else None


def learned_settings(p, kinds=None) -> dict:
    """The settings of the learned bases a profile fits: ``{kind: {setting: value}}`` (part of their key)."""
    kinds = p.bases if kinds is None else kinds
    every = {"ica": {"n_components": p.ica_components, "seed": p.seed},
             "nmf": {"n_components": p.nmf_components, "seed": p.seed},
             "sae": {"n_latents": p.sae_latents, "k": p.sae_k, "epochs": p.sae_epochs, "seed": p.seed},
             "random": {"seed": p.seed}}
    return {k: every[k] for k in kinds if k in every}


def _learned(kind: str, settings: dict, n: int, device=None):
    """An unfitted ICA, NMF or SAE basis with its settings, for a sample of ``n`` vectors."""
    if kind == "ica":
        from .ica import ICABasis

        return ICABasis(settings["n_components"], seed=settings["seed"])
    if kind == "nmf":
        from .nmf import NMFBasis

        return NMFBasis(settings["n_components"], seed=settings["seed"])
    from .sae import SAEBasis

    return SAEBasis(settings["n_latents"], settings["k"], epochs=settings["epochs"], seed=settings["seed"],
                    batch_size=sae_batch(n), device=device)


def sae_batch(n: int) -> int:
    """The SAE's minibatch for a sample of ``n`` vectors: ``n / 100`` within [256, 4096], so that a
    small sample still gets about 100 optimiser steps per epoch (the quick profile: 600 vectors per step)."""
    return int(min(4096, max(256, n // 100)))


def bases_key(p) -> dict:
    """What profile ``p``'s bases are made from: the layers, the kinds and their settings, the sample (its hash).

    The one key of step 2 (the driver :func:`make_bases` and provenance call it).
    """
    return provenance.key(__name__, {"layers": list(p.layers), "bases": list(p.bases), "learned": learned_settings(p)},
                          {"sample": provenance.require(p, "sample")["hash"]})


def make_bases(p) -> dict:
    """Step 2 for profile ``p``: its bases (reused when current); returns the sidecar."""
    return fit_layer_bases(p.artifact("sample"), p.artifact("bases"), p.layers, bases_key(p), chunk_size=p.pca_chunk,
                           profile=p.name, kinds=p.bases, settings=learned_settings(p), device=p.device)


def fit_layer_bases(sample_folder, bases_folder, layers, key: dict, *, chunk_size: int = 16384,
                    profile: str = "", kinds=("pca", "neuron"), settings: dict | None = None, device=None) -> dict:
    """Fit and save the bases of every layer of a sample, and their Fig. 5 curves (notebook 02).

    Writes ``<layer>_<curve>.npz`` per layer and basis and ``<layer>_curves.npz``
    (:func:`explained_curve` of each) into ``bases_folder``; layers finished
    before an interruption are kept, and an SAE resumes from its last epoch.
    ``kinds``: names in :data:`KINDS` (``pca`` always: the index and ICA use it;
    the PCA of the post-ReLU activations comes with it); ``settings``:
    :func:`learned_settings`. ``key``: the artifact's key (:func:`bases_key`
    for a profile). ``device``: where the SAE trains and, when it
    is a GPU, where the moments are summed (:func:`fit_bases`); ``None``: CUDA
    when available. Memory: as :func:`fit_bases` and :func:`explained_curve`,
    plus the learned bases' own bounds.

    Returns
    -------
    dict
        The sidecar of the bases artifact.
    """

    unknown = [k for k in kinds if k not in KINDS]
    if unknown or "pca" not in kinds:
        raise ValueError(f"bases={list(kinds)} is not valid: use names from {list(KINDS)}, pca among them "
                         "(e.g. bases='pca,neuron,sae').")
    settings = settings or {}
    sample = store.read_meta(sample_folder, made_by=SAMPLE_MADE_BY)
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
        # float64 sums either way; the device only changes the rounding of the products (see moments.py)
        moments = "float64 on cuda" if _gpu(_default_device(device)) is not None else "numpy (host BLAS)"
        return b.commit(sorted(p.name for p in b.partial.glob("*.npz")), extra={"moments": moments})


def _default_device(device):
    """``device``, or as the SAE: CUDA when available, else None."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else None
    return device


def _fit_layer(folder, layer, X, relu, kinds, settings, chunk_size, device) -> None:
    device = _default_device(device)
    log.info("%s: moments %s", layer, "on " + str(device) if _gpu(device) is not None else "by numpy on the host")
    seed = settings["random"]["seed"] if "random" in kinds else None
    fitted = fit_bases(X, relu, chunk_size, desc=layer, device=device, random_seed=seed)  # relu: a ReLU follows
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
        if kind not in settings or kind == "random":
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
    curves = {c: _curve(basis, X, c.endswith("_post_relu"), chunk_size) for c, basis in fitted.items()}
    for curve, basis in fitted.items():
        with store.atomic(folder / f"{layer}_{curve}.npz") as tmp, open(tmp, "wb") as f:
            basis.save(f)
    with store.atomic(folder / f"{layer}_curves.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **curves)
    for checkpoint in folder.glob(f"{layer}_*.checkpoint.pt"):
        checkpoint.unlink()


def _curve(basis, X, relu: bool, chunk_size: int) -> np.ndarray:
    """Fig. 5's curve of a basis fitted on ``X``: for PCA and the neurons (orthonormal, their codes
    ``(x - mean) @ W.T`` with the sample's mean) the cumulative sum of their explained-variance ratios,
    which is :func:`explained_curve` in closed form (its pass over ``X`` would cost as much as the moments
    for each); for the other bases :func:`explained_curve`'s pass."""
    if type(basis) in (PCABasis, NeuronBasis, RandomBasis):
        return np.cumsum(np.asarray(basis.explained_variance_ratio_, np.float64))
    return explained_curve(basis, X, relu=relu, chunk_size=chunk_size)


def _class(curve: str):
    kind = curve.split("_")[0]
    if kind in ("ica", "nmf"):
        from .ica import ICABasis
        from .nmf import NMFBasis

        return ICABasis if kind == "ica" else NMFBasis
    if kind == "sae":
        from .sae import SAEBasis

        return SAEBasis
    return {"neuron": NeuronBasis, "random": RandomBasis}.get(kind, PCABasis)


def load_basis(bases_folder, layer: str, curve: str = "pca_pre_relu", key: dict | None = None):
    """Load one saved basis, e.g. ``load_basis(folder, "fc1", "neuron_pre_relu")``.

    ``curve``: a file's curve name or a kind (``"sae"`` reads ``sae_pre_relu``);
    ``key``: the key the bases must have (see :mod:`helpers.pipeline.provenance`).
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


def _cost(p, scale) -> costs.Cost:
    """Per layer and linear basis an npz of its vectors and the moments (two d x d float64 arrays), per learned
    basis its vectors (ICA and SAE: and their encoder); the moments' products (before and after the ReLU) and two eigensolves per layer; in memory a
    chunk of rows in float64 and a few d x d float64 arrays (the learned bases' work is a rough projection)."""
    n, settings = scale.images["sample"], learned_settings(p)
    out = costs.Cost(note="ICA, NMF, SAE: rough" if set(p.bases) & {"ica", "nmf", "sae"} else "")
    for layer in p.layers:
        d, relu = scale.d(layer), scale.relu.get(layer, False)
        linear = 1 + relu + sum(k in p.bases for k in ("neuron", "random"))
        disk = linear * (2 * d * d * 8 + 4 * d * 8)
        work = {"flop64": 2 * n * d * d * (1 + relu), "eigh": d ** 3 * (1 + relu)}
        for kind in set(p.bases) & {"ica", "nmf", "sae"}:
            if kind == "nmf" and not relu:
                continue
            k = {"ica": min(p.ica_components, d), "nmf": p.nmf_components}.get(kind) or settings["sae"]["n_latents"] \
                or 4 * d
            disk += (1 if kind == "nmf" else 2) * k * d * 8 + 2048  # vectors (ICA, SAE: and the encoder)
            work["flop32"] = work.get("flop32", 0) + 2 * n * d * k * (3 * p.sae_epochs if kind == "sae" else 20)
        curves = 8 * d * (linear + len(set(p.bases) & {"ica", "nmf", "sae"}))
        out = out + costs.Cost(disk + curves + 4096, host=min(p.pca_chunk, n) * d * 8 * 2 + 6 * d * d * 8,
                               device=4 * d * d * 8, work=work)
    return out


STEP = provenance.declare(
    __name__, "02_pca", "bases", key=bases_key, reads=("sample",), build=make_bases,
    settings=("layers", "bases", "ica_components", "nmf_components", "sae_latents", "sae_k", "sae_epochs", "seed"),
    uses=("model", "pca_chunk", "device"),
    outputs=(provenance.Output("fig05_explained_variance", caption="Fig. 5 · explained variance"),
             provenance.Output("explained_variance_counts.csv", gather="explained_variance"),
             provenance.Output("explained_variance_vs_published.csv", when=lambda p: p.published)),
    cost=_cost)
