"""What differs between network families, written once per family.

The method is the same for every network. What a step needs to know about a
particular network is asked of its :class:`Family`, found by
:func:`family_of` from the model's structure (never from its name):

- the **layer table**: names a user may give besides module paths (AlexNet's
  paper names ``conv1`` … ``fc3``) and the default layers to study;
- the **positions** of a layer: every layer is read, through a :class:`Site`,
  as a map ``(B, C, H, W)`` (one position per ``(y, x)``) or a vector
  ``(B, D)`` (one position: the whole vector). A ViT's token sequence
  ``(B, 1 + N, D)`` is read as the ``√N × √N`` map of its patch tokens; the
  class token is left out of the positions (it is still ablated);
- the **receptive field** of a position (see :mod:`helpers.models.receptive`);
- the **stages** whose composition is the forward pass, where the ablation
  sweep splits the network (:func:`split`).

``AlexNet`` (any ``features``/``avgpool``/``classifier`` network, VGG too),
``ResNet`` (torchvision's ResNets and ResNeXts, ``mini_resnet``) and ``ViT``
(torchvision's VisionTransformer, ``mini_vit``) are described here; any other
module falls back to :class:`Family`: layers by output shape, receptive fields
traced through its graph (or the whole image), and a sweep of full forward
passes with the settings stacked in the batch.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


def _grid(n: int) -> tuple[int, int]:
    """``(h, w)`` of n patch tokens: a square grid, else a column of n."""
    g = math.isqrt(n)
    return (g, g) if g * g == n else (n, 1)



@dataclass(frozen=True)
class Stage:
    """One piece of the forward pass: ``run`` maps the previous stage's output to this one's.

    ``path`` is the module whose output the stage returns (``""`` for glue
    such as a flatten); ``members`` are other modules run inside it.
    """

    path: str
    run: Callable
    members: tuple = field(default=())


class Family:
    """Any module: the fallback, and the base of the described families."""

    name = "any module"
    prefix_tokens = 0
    task = "classify"
    """What the network's output is measured by in the ablation (05): ``"classify"`` (top-1 of its labels) or
    ``"next_token"`` (a language model's next-token top-1 and loss)."""

    def matches(self, model: nn.Module) -> bool:
        return True

    def aliases(self, model: nn.Module) -> dict[str, str]:
        """Layer names that are not module paths: ``{name: path}``."""
        return {}

    def default_layers(self, model: nn.Module) -> list[str]:
        """Up to 8 ``Conv2d``/``Linear`` modules spread evenly over the network, the last always in."""
        paths = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if len(paths) <= 8:
            return paths
        return [paths[round(i * (len(paths) - 1) / 7)] for i in range(8)]

    def stages(self, model: nn.Module) -> list[Stage] | None:
        """The forward pass as stages, or ``None``: the sweep runs full forward passes."""
        return None

    def field_kind(self, model: nn.Module, site) -> str:
        """How :mod:`helpers.models.receptive` finds a layer's field: ``"graph"``, ``"patch"`` or ``"whole"``."""
        return "graph" if site.kind == "map" else "whole"

    def patch_size(self, model: nn.Module) -> int:
        """Side of the input patch of one token (families with ``"patch"`` fields)."""
        raise NotImplementedError(f"{self.name} has no patch tokens")

    def token_grid(self, n: int) -> tuple[int, int]:
        """``(h, w)`` positions of ``n`` tokens: a square grid of patches, else a column."""
        return _grid(n)

    def reads_input(self, model: nn.Module, path: str) -> bool:
        """Whether the layer at ``path`` is read at its module's input rather than its output."""
        return False


class AlexNetFamily(Family):
    """``features`` (conv/pool chain), ``avgpool``, flatten, ``classifier``: AlexNet, VGG, ``mini_alexnet``."""

    name = "AlexNet"

    def matches(self, model):
        return all(isinstance(getattr(model, a, None), nn.Sequential) for a in ("features", "classifier")) \
            and isinstance(getattr(model, "avgpool", None), nn.Module)

    def aliases(self, model):
        """The paper's names: ``conv1`` … for the convs of ``features``, ``fc1`` … for the linears."""
        out = {}
        for part, kind, stem in (("features", nn.Conv2d, "conv"), ("classifier", nn.Linear, "fc")):
            found = [i for i, m in enumerate(getattr(model, part)) if isinstance(m, kind)]
            out.update({f"{stem}{j + 1}": f"{part}.{i}" for j, i in enumerate(found)})
        return out

    def default_layers(self, model):
        return list(self.aliases(model))

    def stages(self, model):
        return ([Stage(f"features.{i}", m) for i, m in enumerate(model.features)]
                + [Stage("avgpool", model.avgpool), Stage("", nn.Flatten(1))]
                + [Stage(f"classifier.{i}", m) for i, m in enumerate(model.classifier)])


class ResNetFamily(Family):
    """torchvision's ResNet layout: stem, ``layer1`` … ``layer4`` of residual blocks, ``avgpool``, ``fc``."""

    name = "ResNet"
    PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")

    def matches(self, model):
        return all(hasattr(model, a) for a in self.PARTS) and isinstance(model.layer1, nn.Sequential)

    def blocks(self, model):
        return [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(model, f"layer{s}"))]

    def default_layers(self, model):
        """``conv1``, the last conv of every block (before its batch norm), ``fc``: the authors' demo."""
        last = [f"{path}.conv3" if hasattr(b, "conv3") else f"{path}.conv2" for path, b in self.blocks(model)]
        return ["conv1", *last, "fc"]

    def stages(self, model):
        stem = nn.Sequential(model.bn1, model.relu, model.maxpool)
        return ([Stage("conv1", model.conv1), Stage("", stem, ("bn1", "relu", "maxpool"))]
                + [Stage(path, block) for path, block in self.blocks(model)]
                + [Stage("avgpool", model.avgpool), Stage("", nn.Flatten(1)), Stage("fc", model.fc)])


class ViTFamily(Family):
    """torchvision's VisionTransformer (``vit_b_16``, ``mini_vit``): patch tokens after a class token."""

    name = "ViT"
    prefix_tokens = 1

    def matches(self, model):
        from torchvision.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def layer_indices(self, model) -> list[int]:
        """Encoder layers shown by default: ViT-B/16's 0, 3, 7 and 11, all of a model with four or fewer."""
        n = len(model.encoder.layers)
        return list(range(n)) if n <= 4 else sorted({0, n // 4, (2 * n) // 3 - 1, n - 1})

    def default_layers(self, model):
        layers = [f"encoder.layers.encoder_layer_{i}" for i in self.layer_indices(model)]
        return ["conv_proj", *(f"{p}.{s}" for p in layers for s in ("self_attention", "mlp.3")), "heads.head"]

    def stages(self, model):
        enc = model.encoder

        def embed(x):  # VisionTransformer._process_input after conv_proj, the class token, Encoder's start
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
            return enc.dropout(x + enc.pos_embedding)

        return ([Stage("conv_proj", model.conv_proj), Stage("", embed, ("encoder.dropout",))]
                + [Stage(f"encoder.layers.{name}", layer) for name, layer in enc.layers.named_children()]
                + [Stage("encoder.ln", enc.ln), Stage("", lambda x: x[:, 0]), Stage("heads", model.heads)])

    def patch_size(self, model):
        return int(model.patch_size)

    def field_kind(self, model, site):
        if site.kind == "map" and site.prefix_tokens == 0 and site.path == "conv_proj":
            return "graph"
        return "patch" if site.kind == "tokens" else "whole"


class CausalLMFamily(Family):
    """Causal language models (``mini_gpt``; Hugging Face's GPT-2, GPT-NeoX, Llama, Mistral, Qwen2): a layer's
    token sequence ``(B, T, D)`` is read as ``T`` positions ``(y, x) = (t, 0)``; the default layers are every
    block's MLP neurons (:mod:`helpers.models.causal_lm`: a gated MLP's are read at ``down_proj``'s input);
    any module path may be named (a block's output is the residual stream)."""

    name = "causal LM"
    task = "next_token"

    def matches(self, model):
        from . import causal_lm

        try:
            causal_lm.family(model)
        except ValueError:
            return False
        return True

    def default_layers(self, model):
        from . import causal_lm

        return causal_lm.mlp_sites(model)

    def token_grid(self, n):
        return (n, 1)

    def reads_input(self, model, path):
        from . import causal_lm

        return causal_lm.reads_input(model, path)

    def field_kind(self, model, site):
        return "whole"


FAMILIES = (AlexNetFamily(), ResNetFamily(), ViTFamily(), CausalLMFamily())
"""The described families, asked in order; :class:`Family` takes any other module."""


def family_of(model: nn.Module) -> Family:
    """The family that describes ``model`` (by its structure), else the fallback."""
    return next((f for f in FAMILIES if f.matches(model)), Family())


def resolve(model: nn.Module, layers) -> dict[str, str]:
    """``{name: module path}`` for layer names (paper names of the family, or module paths).

    Raises
    ------
    ValueError
        For a name that is neither, listing the closest real module paths.
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError(f"layers is empty; choose some of {default_layers(model)}.")
    aliases = family_of(model).aliases(model)
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        path = aliases.get(name, name)
        if path not in modules or path == "":
            close = difflib.get_close_matches(name, [*aliases, *(m for m in modules if m)], n=6, cutoff=0.5)
            raise ValueError(
                f"layer {name!r} is not a module of {type(model).__name__}; closest module paths: {close}. "
                f"Its default layers are {default_layers(model)}; any module path works (print(model) lists them).")
        out[name] = path
    return out


def default_layers(model: nn.Module) -> list[str]:
    """The layers studied when the profile names none."""
    return family_of(model).default_layers(model)
