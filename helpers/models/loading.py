"""A profile's model, ready: a stand-in (its shipped weights, or trained here with ``retrain=True``), a
torchvision network with its named weights, or the researcher's own; checked against the images; its id
(:func:`model_id`) goes into every artifact's key.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..images.folders import CHANNELS
from ..pipeline import provenance, store
from ..pipeline.rules import is_text_dataset
from ..pipeline.settings import Profile
from . import families
from .inputs import check_split
from .registry import (MODELS, _load_other, _weights, architecture, builder, is_trained_here, load_torchvision, spec,
                       weights_id)
from .running import check_device, place, state_hash
from .training import checkpoint_key

log = logging.getLogger(__name__)


MADE_BY = "01_sample (it trains the stand-in model when retrain=True)"




def check(profile: Profile) -> None:
    """Refuse an unknown model, unknown layers, or a model that cannot take the dataset's images.

    Raises
    ------
    ValueError
        Naming the model, the dataset or layer, and what would work.
    """
    s = spec(profile.model)
    if s.text != is_text_dataset(profile.dataset):
        fits = ("'fortunes', 'textfolder' or 'hf:<name>[:<config>]'" if s.text
                else "'fashion_mnist', 'imagenet' or 'imagefolder'")
        gives = "text" if is_text_dataset(profile.dataset) else "images"
        raise ValueError(f"model={profile.model!r} takes {s.input}, but dataset={profile.dataset!r} gives {gives}; "
                         f"use dataset={fits} with this model.")
    if s.text and s.source == "standin" and profile.retrain:
        raise ValueError(f"retrain=True: {profile.model} is trained by its own command, python -m "
                         "helpers.models.lm_training (about 3 minutes on a 2-core CPU), which says whether it gives "
                         "the shipped weights bit for bit; the steps read the shipped weights (retrain=False).")
    channels = CHANNELS.get(profile.dataset)
    if channels is not None and s.channels is not None and channels != s.channels:
        fits = [name for name, m in MODELS.items() if m["channels"] == channels]
        raise ValueError(
            f"model={profile.model!r} takes {s.input}, but dataset={profile.dataset!r} gives "
            f"{channels}-channel images; use one of {fits} with this dataset, or a dataset of "
            f"{s.input.split(' (')[0]}.")
    families.resolve(architecture(profile.model), profile.layers)


def load_standin(profile: Profile, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's stand-in: its shipped weights, or (``retrain``) weights trained here.

    By default the weights that ship with the package (:mod:`helpers.models.shipped`),
    their file's hash checked against their record; the id is that hash. With
    ``profile.retrain`` the stand-in is trained here (pinned, see
    :mod:`helpers.models.training`) into ``data/<profile>/<model>/model/model.pt``
    (loaded with ``weights_only=True``), reused while its key is current, and
    compared with the shipped weights; ``train=False`` (as 03-08 load it)
    makes a missing or stale checkpoint an error naming 01_sample.
    """
    from . import shipped

    if not profile.retrain:
        model = builder(profile.model)()
        model.load_state_dict(shipped.load_state(profile.model))
        rec = shipped.record(profile.model)
        return model.eval(), {"name": profile.model, "id": shipped.model_id(profile.model),
                              "test_accuracy": rec["test_accuracy"], "weights": "shipped"}
    from .training import train_pinned

    folder, key = profile.artifact("model"), checkpoint_key(profile)
    if train:
        with store.Build(folder, key, MADE_BY, profile=profile.name, resumable=False) as b:
            if not b.current:
                result = train_pinned(profile, b.partial / "model.pt")
                trained = builder(profile.model)()
                trained.load_state_dict(torch.load(b.partial / "model.pt", map_location="cpu", weights_only=True))
                result["weights_sha256"] = state_hash(trained)
                result["compared"] = shipped.compare(profile.model, result["weights_sha256"],
                                                     result["test_correct"], shipped.recipe(key))
                b.commit(["model.pt"], extra=result)
                store.say(f"trained {profile.model}: test accuracy {result['test_correct']} of "
                          f"{result['test_images']} ({100 * result['test_accuracy']:.2f} %); {result['compared']}")
            meta = b.meta
    else:
        meta = store.read_meta(folder, key, MADE_BY)
    model = builder(profile.model)()
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise store.CorruptArtifactError(
            f"{folder / 'model.pt'} is corrupt or not a {profile.model} checkpoint ({type(e).__name__}); "
            f"delete {folder} and rerun {MADE_BY}."
        ) from None
    return model.eval(), {"name": profile.model, "id": trained_id(meta), "test_accuracy": meta["test_accuracy"],
                          "weights": "trained here", "compared": meta.get("compared")}


def trained_id(meta: dict) -> str:
    """The id of a checkpoint trained here, from its artifact's sidecar: ``sha256:`` of ``model.pt``."""
    return f"sha256:{meta['files']['model.pt']['sha256']}"


def load_model(profile: Profile, device=None, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's model in eval mode on ``device``, and an info dict (``name``, ``id``, ``family``, ...).

    ``id`` identifies the weights in every artifact made with the model: the
    checkpoint's hash for a stand-in, the weights' name for torchvision's
    named weights, the hash of the weights otherwise.
    """
    check(profile)
    s = spec(profile.model)
    if s.source == "standin":
        model, info = load_standin(profile, train)
    elif s.source == "torchvision" and s.weights:
        model, info = load_torchvision(s, profile.seed)
    else:
        model, info = _load_other(s, profile.seed)
        info = dict(info)  # the cached one stays as it is
    info["family"] = families.family_of(model).name
    return place(model, device or profile.device), info


def model_id(p: Profile) -> str:
    """The id of the profile's model: its checkpoint's hash (stand-ins, shipped or trained here) or its
    weights' name."""
    from . import shipped

    if not is_trained_here(p.model):
        return weights_id(p.model, p.seed)
    return trained_id(provenance.require(p, "model")) if p.retrain else shipped.model_id(p.model)


def _check_splits(p: Profile) -> None:
    check_split(p, p.sample_split, "sample_split")
    check_split(p, p.eval_split, "eval_split")


def weights_needs(name: str) -> list:
    """What loading model ``name`` needs that is not here: torchvision's named weights not in torch's cache
    (a :class:`~helpers.pipeline.provenance.Missing` that downloads them into it)."""
    s = spec(name)
    if s.source != "torchvision" or not s.weights:
        return []
    w = _weights(s)
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if cache.is_file():
        return []
    size = w.meta.get("_file_size")
    return [provenance.Missing(f"{name}'s weights {s.weights}", f"not in torch's cache ({cache})",
                               f"download {w.url} into {cache.parent}, or set TORCH_HOME to a folder whose "
                               "hub/checkpoints/ holds it",
                               fetch=lambda: w.get_state_dict(progress=True, check_hash=True),
                               download=int(size * 1e6) if size else None)]


STEP = provenance.declare(
    __name__, "01_sample", "model", key=checkpoint_key, build=load_model,
    settings=("dataset", "data_root", "model", "retrain", "train_epochs", "train_limit", "seed"),
    applies=lambda p: is_trained_here(p.model) and p.retrain)
"""01 trains a stand-in here when ``retrain`` (otherwise its shipped weights are loaded: no artifact)."""
provenance.register_check(check)
provenance.register_check(_check_splits)
provenance.register_check(check_device)
provenance.register_need(lambda p: weights_needs(p.model), steps=("01", "03", "04", "05", "06", "08"))
