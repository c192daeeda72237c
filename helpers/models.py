"""Model registry: which networks there are, how each is built and loaded, and its id.

A model is named three ways (``-p model=...``):

built-in
    the stand-ins trained here on first use (``mini_alexnet``, ``mini_resnet``,
    ``mini_vit``: see :mod:`helpers.standins` and :mod:`helpers.training`;
    their id is the checkpoint's content hash) and the authors' networks with
    torchvision's named weights (``alexnet``, ``resnet18``, ``resnet50``,
    ``vit_b_16``, each ``IMAGENET1K_V1``, never ``DEFAULT``);
``torchvision:<name>[:<weights>]``
    any classifier of torchvision's registry (``list_models``, ``get_model``,
    ``get_weight``) with the named weights (default: the first listed, e.g.
    ``IMAGENET1K_V1``; ``none``: random weights seeded by the profile) and
    their preprocessing;
``<python.module>:<callable>``
    the researcher's own factory, importable from ``PYTHONPATH``, returning the
    module or ``(module, preprocessing)``; preprocessing is a torchvision
    ``ImageClassification``-like preset (``resize_size``, ``crop_size``,
    ``mean``, ``std``) used for image folders (default: ImageNet's).

What a model's layers, positions, receptive fields and split are is asked of
its family (:mod:`helpers.architectures`), never decided here by name.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import architectures, keys, store
from .config import Profile
from .batches import Batches
from .data import CHANNELS, images_key, load_dataset, select

log = logging.getLogger(__name__)

FASHION = "1-channel 28 x 28 images (Fashion-MNIST)"
IMAGENET = "RGB images (ImageNet or an image folder)"
MODELS = {
    "mini_alexnet": {"standin": "MiniAlexNet", "channels": 1, "input": FASHION},
    "mini_resnet": {"standin": "MiniResNet", "channels": 1, "input": FASHION},
    "mini_vit": {"standin": "MiniViT", "channels": 1, "input": FASHION},
    "alexnet": {"torchvision": "alexnet", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "resnet18": {"torchvision": "resnet18", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "resnet50": {"torchvision": "resnet50", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "vit_b_16": {"torchvision": "vit_b_16", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
}
"""The built-in models: stand-ins trained here, and torchvision networks with their named weights."""
MADE_BY = "01_sample (it trains the stand-in model when retrain=True)"
SOURCES = ("models", "standins", "training", "data", "batches")
CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class Spec:
    """A parsed model name: ``source`` is ``"standin"``, ``"torchvision"`` or ``"callable"``."""

    name: str
    source: str
    target: str
    weights: str | None = None
    channels: int | None = None
    input: str = "the images its factory expects"


@functools.lru_cache(maxsize=None)
def spec(name: str) -> Spec:
    """Parse a model name (see the module docstring).

    Raises
    ------
    ValueError
        For a name that is none of the three kinds, or an unknown torchvision model or weights.
    """
    if name in MODELS:
        m = MODELS[name]
        source = "standin" if "standin" in m else "torchvision"
        return Spec(name, source, m.get("standin") or m["torchvision"], m.get("weights"), m["channels"], m["input"])
    if name.startswith("torchvision:"):
        from torchvision import models as tvm

        _, tv, *rest = name.split(":")
        known = tvm.list_models(module=tvm)
        if tv not in known:
            import difflib
            raise ValueError(f"model={name!r}: torchvision has no classifier {tv!r}; close: "
                             f"{difflib.get_close_matches(tv, known, n=5)} (torchvision.models.list_models()).")
        members = [w.name for w in tvm.get_model_weights(tv)]
        weights = rest[0] if rest else members[0]
        if weights != "none" and weights not in members:
            raise ValueError(f"model={name!r}: {tv} has no weights {weights!r}; it has {members} or 'none' "
                             "(random weights).")
        return Spec(name, "torchvision", tv, None if weights == "none" else weights, 3, IMAGENET)
    if CALLABLE.fullmatch(name):
        return Spec(name, "callable", name)
    raise ValueError(
        f"model={name!r} is unknown; use a built-in one of {list(MODELS)}, 'torchvision:<name>[:<weights>]' "
        "(e.g. 'torchvision:resnet34:IMAGENET1K_V1'), or '<python.module>:<callable>' for your own factory.")


def is_trained_here(name: str) -> bool:
    """Whether the model is a stand-in trained here (its id is its checkpoint's hash)."""
    return spec(name).source == "standin"


def builder(name: str):
    """The constructor of a stand-in model (untrained)."""
    from . import standins

    s = spec(name)
    if s.source != "standin":
        raise ValueError(f"model={name!r} is not a stand-in trained here; stand-ins: "
                         f"{[n for n, m in MODELS.items() if 'standin' in m]}.")
    return getattr(standins, s.target)


def _weights(s: Spec):
    from torchvision.models import get_model_weights

    return None if s.weights is None else get_model_weights(s.target)[s.weights]


FACTORY = ("a factory takes no arguments and returns a torch.nn.Module, or a tuple (module, preprocessing) "
           "with preprocessing a torchvision ImageClassification-like preset (resize_size, crop_size, mean, std) "
           "or None")
"""What a ``<module>:<callable>`` must be, said in every refusal."""


@functools.lru_cache(maxsize=2)
def _factory(s: Spec):
    """The user's factory's ``(module, preprocessing or None)``, called once per process.

    Raises
    ------
    ValueError
        When the callable cannot be imported, is not callable, fails when called
        without arguments, or returns anything but a module or ``(module, preprocessing)``.
    """
    module_name, attr = s.target.rsplit(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model={s.name!r}: cannot import {attr} from {module_name} ({e}); put the module's "
                         "folder on PYTHONPATH (the runner passes it to every notebook).") from None
    if not callable(factory):
        raise ValueError(f"model={s.name!r}: {attr} is a {type(factory).__name__}, not a model factory; {FACTORY}.")
    try:
        with torch.random.fork_rng():  # a factory that initialises at random gives the same weights each time
            torch.manual_seed(0)
            made = factory()
    except Exception as e:  # noqa: BLE001 - whatever a callable that is no factory raises
        raise ValueError(f"model={s.name!r}: calling {attr}() failed ({type(e).__name__}: {e}); it is no model "
                         f"factory: {FACTORY}.") from None
    model, pre = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={s.name!r}: {attr}() returned {type(made).__name__}, not a torch.nn.Module; "
                         f"{FACTORY}.")
    if pre is not None and not all(hasattr(pre, a) for a in ("resize_size", "crop_size")):
        raise ValueError(f"model={s.name!r}: {attr}() returned a preprocessing {type(pre).__name__} without "
                         f"resize_size and crop_size; {FACTORY}.")
    return model.eval(), pre


@functools.lru_cache(maxsize=8)
def architecture(name: str) -> nn.Module:
    """An instance of the model without its trained weights: for layer tables, shapes and fields."""
    s = spec(name)
    if s.source == "standin":
        return builder(name)().eval()
    if s.source == "torchvision":
        from torchvision.models import get_model

        return get_model(s.target, weights=None).eval()
    return _factory(s)[0]


def default_layers(name: str) -> tuple:
    """The layers studied when the profile names none: the family's (the authors' demo for built-ins)."""
    model = architecture(name)
    return tuple(architectures.default_layers(model))


def preprocessing(name: str):
    """The preprocessing preset for image folders: the weights' own, the factory's, else ImageNet's."""
    from torchvision.models import AlexNet_Weights

    s = spec(name)
    pre = None
    if s.source == "torchvision" and s.weights:
        pre = _weights(s).transforms()
    elif s.source == "callable":
        pre = _factory(s)[1]
    return pre or AlexNet_Weights.IMAGENET1K_V1.transforms()


def state_hash(model: nn.Module) -> str:
    """``sha256:`` of every parameter and buffer, names included (weights that are not named)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{h.hexdigest()}"


def get_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def memory_format(device) -> torch.memory_format:
    """How a model's 4-D tensors are laid out on ``device``: channels-last on the CPU, else contiguous.

    On the CPU, oneDNN's channels-last convolutions ran the stand-ins 1.2-2 times
    faster than the default layout (``bench/ablation.py`` prints the forward
    rate of both); on other devices the default layout is kept.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def place(model: nn.Module, device=None) -> nn.Module:
    """``model`` in eval mode on ``device`` (``None``: CUDA when available), in its :func:`memory_format`."""
    device = get_device(device)
    return model.eval().to(device=device, memory_format=memory_format(device))


@torch.no_grad()
def correct_count(model, dataset, indices=None, batch_size: int = 256, device=None,
                  num_workers: int = 0, desc: str = "evaluate") -> tuple[int, int]:
    """``(correct, total)``: top-1 hits of ``model`` on ``dataset`` (or the images ``indices``)."""
    device = get_device(device)
    place(model, device)
    correct = total = 0
    batches = Batches(dataset, indices, batch_size, num_workers, device)
    for x, y, _ in tqdm(batches, desc=desc, leave=False):
        pred = model(x.to(device, non_blocking=True)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct, total


def evaluate(model, dataset, indices=None, batch_size: int = 256, device=None,
             num_workers: int = 0, desc: str = "evaluate") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (or the images ``indices``)."""
    correct, total = correct_count(model, dataset, indices, batch_size, device, num_workers, desc)
    return correct / total


def check(profile: Profile) -> None:
    """Refuse an unknown model, unknown layers, or a model that cannot take the dataset's images.

    Raises
    ------
    ValueError
        Naming the model, the dataset or layer, and what would work.
    """
    s = spec(profile.model)
    channels = CHANNELS.get(profile.dataset)
    if channels is not None and s.channels is not None and channels != s.channels:
        fits = [name for name, m in MODELS.items() if m["channels"] == channels]
        raise ValueError(
            f"model={profile.model!r} takes {s.input}, but dataset={profile.dataset!r} gives "
            f"{channels}-channel images; use one of {fits} with this dataset, or a dataset of "
            f"{s.input.split(' (')[0]}.")
    architectures.resolve(architecture(profile.model), profile.layers)


def checkpoint_key(profile: Profile) -> dict:
    """What a stand-in's checkpoint is made from: model, training settings, training images, code."""
    from .training import HYPER

    images = load_dataset(profile, "train")
    return keys.key({"model": profile.model, "epochs": profile.train_epochs, "seed": profile.seed, **HYPER},
                     {"images": images_key(images, select(len(images), profile.train_limit, profile.seed))},
                     SOURCES)


def load_standin(profile: Profile, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's stand-in: its shipped weights, or (``retrain``) weights trained here.

    By default the weights that ship with the package (:mod:`helpers.shipped`),
    their file's hash checked against their record; the id is that hash. With
    ``profile.retrain`` the stand-in is trained here (pinned, see
    :mod:`helpers.training`) into ``data/<profile>/<model>/model/model.pt``
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


def load_torchvision(s: Spec, seed: int = 0) -> tuple[nn.Module, dict]:
    """A torchvision classifier with its named weights (through torchvision's cache), or seeded random ones.

    Raises
    ------
    FileNotFoundError
        When the weights file is neither in torch's cache nor downloadable.
    """
    from torchvision.models import get_model

    w = _weights(s)
    if w is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = get_model(s.target, weights=None).eval()
        return model, {"name": s.name, "id": f"torchvision:{s.target}:none@{state_hash(model)}"}
    try:
        model = get_model(s.target, weights=w)
    except OSError as e:  # URLError and friends
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        raise FileNotFoundError(
            f"{s.name} weights {s.weights} are not in torch's cache ({cache}) and could not be "
            f"downloaded ({type(e).__name__}{': ' + str(e) if str(e) else ''}). Download {w.url} into {cache.parent}, or set TORCH_HOME to a "
            "folder whose hub/checkpoints/ holds it."
        ) from None
    return model.eval(), {"name": s.name, "id": f"torchvision:{w}"}


def weights_id(name: str, seed: int = 0) -> str:
    """The id of a model that is not trained here: its weights' name, else the hash of its weights."""
    s = spec(name)
    if s.source == "torchvision" and s.weights:
        return f"torchvision:{_weights(s)}"
    return _load_other(s, seed)[1]["id"]


@functools.lru_cache(maxsize=2)
def _load_other(s: Spec, seed: int):
    if s.source == "torchvision":
        return load_torchvision(s, seed)
    model, _ = _factory(s)
    return model, {"name": s.name, "id": f"{s.name}@{state_hash(model)}"}


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
    info["family"] = architectures.family_of(model).name
    return place(model, device or profile.device), info

