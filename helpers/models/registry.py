"""Model registry: which networks there are, how each is built and loaded, and its id.

A model is named four ways (``-p model=...``):

built-in
    the stand-ins (``mini_alexnet``, ``mini_resnet``, ``mini_vit``: see
    :mod:`helpers.models.standins`; their trained weights ship with the package,
    :mod:`helpers.models.shipped`, and their id is the checkpoint's content hash) and the authors' networks with
    torchvision's named weights (``alexnet``, ``resnet18``, ``resnet50``,
    ``vit_b_16``, each ``IMAGENET1K_V1``, never ``DEFAULT``);
``<built-in>:untrained``
    the untrained control of a built-in (e.g. ``mini_alexnet:untrained``,
    ``alexnet:untrained``): the same architecture with its constructor's random
    initialisation, seeded by the profile's ``seed``, never trained and never
    loading shipped or downloaded weights; its input and preprocessing are the
    built-in's, its id ``<name>@sha256:<hash of the weights>``;
``torchvision:<name>[:<weights>]``
    any classifier of torchvision's registry (``list_models``, ``get_model``,
    ``get_weight``) with the named weights (default: the first listed, e.g.
    ``IMAGENET1K_V1``; ``none``: random weights seeded by the profile) and
    their preprocessing;
``hf:<name>[:untrained]``
    a Hugging Face causal language model through ``transformers``' ``from_pretrained`` (a hub name, read
    from the local cache when offline, or a folder written by ``save_pretrained``): GPT-2, GPT-NeoX
    (Pythia), Llama, Mistral, Qwen2 (:mod:`helpers.models.causal_lm` says where each one's MLP neurons
    are); ``:untrained`` its configuration with seeded random weights; its tokenizer is the model's own;
``<python.module>:<callable>``
    the researcher's own factory, importable from ``PYTHONPATH``, returning the
    module or ``(module, preprocessing)``; preprocessing is a torchvision
    ``ImageClassification``-like preset (``resize_size``, ``crop_size``,
    ``mean``, ``std``) used for image folders (default: ImageNet's).

What a model's layers, positions, receptive fields and split are is asked of
its family (:mod:`helpers.models.families`), never decided here by name.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import families
from .running import state_hash

FASHION = "1-channel 28 x 28 images (Fashion-MNIST)"


IMAGENET = "RGB images (ImageNet or an image folder)"


TEXT = "token sequences of text (fortunes, a text folder or a Hugging Face corpus)"


MODELS = {
    "mini_alexnet": {"standin": "MiniAlexNet", "channels": 1, "input": FASHION},
    "mini_resnet": {"standin": "MiniResNet", "channels": 1, "input": FASHION},
    "mini_vit": {"standin": "MiniViT", "channels": 1, "input": FASHION},
    "mini_gpt": {"standin": "mini_gpt", "channels": None, "input": TEXT, "modality": "text"},
    "alexnet": {"torchvision": "alexnet", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "resnet18": {"torchvision": "resnet18", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "resnet50": {"torchvision": "resnet50", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
    "vit_b_16": {"torchvision": "vit_b_16", "weights": "IMAGENET1K_V1", "channels": 3, "input": IMAGENET},
}
"""The built-in models: stand-ins trained here, and torchvision networks with their named weights."""


HF = "hf:"
"""The prefix of a Hugging Face causal language model's name."""


CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


UNTRAINED = ":untrained"
"""The suffix that makes a built-in's name its untrained control (seeded random weights)."""


@dataclass(frozen=True)
class Spec:
    """A parsed model name: ``source`` is ``"standin"``, ``"torchvision"``, ``"untrained"`` (``target``: the
    built-in) or ``"callable"``."""

    name: str
    source: str
    target: str
    weights: str | None = None
    channels: int | None = None
    input: str = "the images its factory expects"
    modality: str = "image"

    @property
    def text(self) -> bool:
        """Whether the model reads text (a causal language model), not images."""
        return self.modality == "text"


@functools.lru_cache(maxsize=None)
def spec(name: str) -> Spec:
    """Parse a model name (see the module docstring).

    Raises
    ------
    ValueError
        For a name that is none of the four kinds, an untrained control of no built-in, or an unknown
        torchvision model or weights.
    """
    if name in MODELS:
        m = MODELS[name]
        source = "standin" if "standin" in m else "torchvision"
        return Spec(name, source, m.get("standin") or m["torchvision"], m.get("weights"), m["channels"], m["input"],
                    m.get("modality", "image"))
    if name.startswith(HF):
        target = name[len(HF):]
        trained = not target.endswith(UNTRAINED)
        target = target if trained else target[:-len(UNTRAINED)]
        if not target:
            raise ValueError(f"model={name!r} names no model; give 'hf:<hub name or folder>', e.g. 'hf:gpt2'.")
        return Spec(name, "hf", target, None if trained else "untrained", None, TEXT, "text")
    if name.endswith(UNTRAINED) and not name.startswith("torchvision:"):  # before CALLABLE, which it also matches
        base = name[:-len(UNTRAINED)]
        if base not in MODELS:
            raise ValueError(f"model={name!r}: untrained controls exist for the built-ins only, "
                             f"{[f'{n}{UNTRAINED}' for n in MODELS]}{_close(base, UNTRAINED)}; for another "
                             "torchvision classifier with random weights use 'torchvision:<name>:none'.")
        m = MODELS[base]
        return Spec(name, "untrained", base, None, m["channels"], m["input"], m.get("modality", "image"))
    base, colon, suffix = name.partition(":")
    if colon and base in MODELS:  # a built-in with a suffix other than :untrained (before CALLABLE, which matches)
        hint = f"did you mean {base + UNTRAINED!r} (its untrained control)"
        if "torchvision" in MODELS[base]:
            hint += f", or 'torchvision:{MODELS[base]['torchvision']}:{suffix}' for other weights of torchvision's"
        raise ValueError(f"model={name!r}: {base} is a built-in, whose only suffix is {UNTRAINED!r}; {hint}?")
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
        f"model={name!r} is unknown{_close(name)}; use a built-in one of {list(MODELS)}, its untrained control "
        f"'<built-in>{UNTRAINED}', 'torchvision:<name>[:<weights>]' "
        "(e.g. 'torchvision:resnet34:IMAGENET1K_V1'), 'hf:<name>[:untrained]' (a Hugging Face causal LM), or "
        "'<python.module>:<callable>' for your own factory.")


def _close(name: str, suffix: str = "") -> str:
    """``" (close: 'mini_alexnet')"`` for a misspelt built-in's name, else ``""``."""
    import difflib

    close = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.7)
    return f" (close: {', '.join(repr(c + suffix) for c in close)})" if close else ""


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
    if s.text:
        from . import shipped_lm

        return lambda: shipped_lm.network(shipped_lm.record(s.name)["recipe"])
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
    if s.source == "untrained":
        return architecture(s.target)
    if s.source == "torchvision":
        from torchvision.models import get_model

        return get_model(s.target, weights=None).eval()
    if s.source == "hf":
        from .causal_lm import load_hf

        return load_hf(s.target, trained=False)
    return _factory(s)[0]


def default_layers(name: str) -> tuple:
    """The layers studied when the profile names none: the family's (the authors' demo for built-ins)."""
    model = architecture(name)
    return tuple(families.default_layers(model))


def preprocessing(name: str):
    """The preprocessing preset for image folders: the weights' own (an untrained control: its built-in's),
    the factory's, else ImageNet's."""
    from torchvision.models import AlexNet_Weights

    s = spec(name)
    if s.source == "untrained":
        return preprocessing(s.target)
    pre = None
    if s.source == "torchvision" and s.weights:
        pre = _weights(s).transforms()
    elif s.source == "callable":
        pre = _factory(s)[1]
    return pre or AlexNet_Weights.IMAGENET1K_V1.transforms()


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


def untrained(name: str, seed: int = 0) -> nn.Module:
    """A new instance of a built-in's untrained control: its constructor's random weights, seeded by ``seed``
    (the global random state is left as it was); nothing is trained, read or downloaded.

    A weight matrix its constructor leaves at zero (a ViT's head) is drawn from N(0, 0.02²) instead, as
    the other linear layers of a transformer start: a zero layer would be constant, with nothing to explain.
    """
    s = spec(name)
    if s.source != "untrained":
        raise ValueError(f"model={name!r} is no untrained control; name one '<built-in>{UNTRAINED}', e.g. "
                         f"'mini_alexnet{UNTRAINED}'.")
    base = spec(s.target)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if base.source == "standin":
            model = builder(base.name)()
        else:
            from torchvision.models import get_model

            model = get_model(base.target, weights=None)
        with torch.no_grad():
            for pname, w in model.named_parameters():
                if pname.endswith("weight") and w.ndim > 1 and not w.any():
                    w.normal_(0, 0.02)
    return model.eval()


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
    if s.source == "hf":
        from .causal_lm import load_hf

        trained = s.weights is None
        model = load_hf(s.target, trained=trained, seed=seed)
        return model, {"name": s.name, "id": f"{s.name}@{state_hash(model)}",
                       "weights": "from_pretrained" if trained else f"untrained (seed {seed})"}
    if s.source == "untrained":
        model = untrained(s.name, seed)
        return model, {"name": s.name, "id": f"{s.name}@{state_hash(model)}", "weights": f"untrained (seed {seed})"}
    model, _ = _factory(s)
    return model, {"name": s.name, "id": f"{s.name}@{state_hash(model)}"}
