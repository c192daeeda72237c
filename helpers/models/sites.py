"""Where a layer is read: its hook site (:class:`Site`: module path, kind of positions, ReLU after it),
found for any model through its family, and the split of a network around a layer (:func:`split`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .families import Family, _grid, default_layers, family_of, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Site:
    """One layer of one model: the module to hook and how to read its output.

    Attributes
    ----------
    name : str
        The layer's name as the user gives it (a paper name or a module path).
    path : str
        Module path, as in ``model.get_submodule(path)``.
    kind : {"map", "tokens", "vector"}
        Output ``(B, C, H, W)``, ``(B, T, D)`` or ``(B, D)``.
    shape : tuple of int
        Shape of one image's output as read: ``(C, H, W)`` or ``(D,)``.
    relu : bool
        An ``nn.ReLU`` module takes this very output next (AlexNet's convs and
        fcs but the last); then the post-ReLU statistics apply.
    first : bool
        The module returns a tuple whose first element is the layer
        (``nn.MultiheadAttention``).
    prefix_tokens : int
        Tokens before the patch tokens (a ViT's class token), not positions.
    input : bool
        The layer is the module's input, not its output (a gated MLP's neurons, the input of ``down_proj``):
        hooks read ``args[0]``.
    """

    name: str
    path: str
    kind: str
    shape: tuple
    relu: bool = False
    first: bool = False
    prefix_tokens: int = 0
    input: bool = False

    def read(self, out) -> torch.Tensor:
        """The output as a map ``(B, C, H, W)`` or a vector ``(B, D)``; a view where possible."""
        x = out[0] if self.first else out
        if self.kind != "tokens":
            return x
        t = x[:, self.prefix_tokens:]
        b, n, d = t.shape
        h, w = self.shape[1:] if self.shape[1] * self.shape[2] == n else _grid(n)
        return t.transpose(1, 2).reshape(b, d, h, w)

    def apply(self, out, fn: Callable, groups: int = 1, shared: bool = False, memory_format=None):
        """``out`` with ``fn`` applied to its channel vectors, in the module's own output format.

        ``fn(rows, g, dest)`` gets ``rows`` of shape (R, C) for group ``g`` of
        ``groups`` equal parts of the batch (settings stacked in the batch) and
        writes the new rows into ``dest`` (R, C); every position, prefix tokens
        included, is changed. ``shared``: ``out`` holds one group's batch, and
        every ``fn(·, g, ·)`` reads the same rows: the result holds ``groups``
        times the batch (no stacked copy of the input is made). A map comes back
        as a channels-last view of the new rows (``(B, C, H, W)`` shape), or in
        ``memory_format`` when given (the layout the next layer's kernels expect:
        a channels-last map handed to a contiguous-format network on CUDA can
        send cuDNN to slow kernels).
        """
        first = isinstance(out, (tuple, list))
        x = out[0] if first else out
        moved = x.permute(0, 2, 3, 1) if x.ndim == 4 else x  # a view; rows are a view for channels-last maps
        c = moved.shape[-1]
        rows = moved.reshape(-1, c) if shared else moved.reshape(groups, -1, c)
        new = torch.empty((groups, rows.shape[-2], c), dtype=x.dtype, device=x.device)
        for g in range(groups):
            fn(rows if shared else rows[g], g, new[g])
        new = new.reshape(groups * moved.shape[0] if shared else moved.shape[0], *moved.shape[1:])
        if x.ndim == 4:
            new = new.permute(0, 3, 1, 2)
            new = new if memory_format is None else new.contiguous(memory_format=memory_format)
        return (new, *out[1:]) if first else new



@torch.no_grad()
def sites(model: nn.Module, layers, example: torch.Tensor) -> dict[str, Site]:
    """Resolve ``layers`` and read each one's output kind and shape from one forward pass of ``example``.

    Parameters
    ----------
    example : Tensor of shape (C, H, W)

    Returns
    -------
    dict
        ``{name: Site}`` in the order the layers run.
    """
    paths = resolve(model, layers)
    fam = family_of(model)
    seen, order, relu_inputs, handles = {}, [], [], []

    inputs = {name for name, path in paths.items() if fam.reads_input(model, path)}

    def hook_for(name):
        def hook(module, args, out):
            if name not in seen:
                seen[name] = args[0] if name in inputs else out
                order.append(name)
        return hook

    for name, path in paths.items():
        handles.append(model.get_submodule(path).register_forward_hook(hook_for(name)))
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_pre_hook(lambda mod, args: relu_inputs.append(args[0])))
    try:
        model.eval()(example.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in paths if n not in seen]
    if missing:
        raise ValueError(f"layer(s) {missing} do not run in {type(model).__name__}'s forward pass; "
                         f"choose modules that do, e.g. {default_layers(model)}.")
    return {name: _site(name, paths[name], seen[name], fam, any(t is seen[name] for t in relu_inputs), name in inputs)
            for name in order}


def _site(name, path, out, fam: Family, relu: bool, input: bool = False) -> Site:
    first = isinstance(out, (tuple, list))
    x = out[0] if first else out
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3, 4):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"layer {name!r} ({path}) outputs {shape}; only maps (B, C, H, W), token sequences "
                         "(B, T, D) and vectors (B, D) can be studied. Choose another module.")
    if x.ndim == 3:
        prefix = fam.prefix_tokens if x.shape[1] > fam.prefix_tokens else 0
        h, w = fam.token_grid(x.shape[1] - prefix)
        return Site(name, path, "tokens", (x.shape[2], h, w), relu, first, prefix, input)
    return Site(name, path, "map" if x.ndim == 4 else "vector", tuple(x.shape[1:]), relu, first)


def split(model: nn.Module, path: str):
    """Where the ablation sweep cuts the network for a layer.

    Returns
    -------
    (prefix, suffix, at_cut) or None
        ``suffix(prefix(x)) == model(x)``. ``at_cut``: the prefix's output is
        the layer's own output (ablate it directly); otherwise the layer runs
        inside the suffix's first stage (ablate it with a hook): for a layer
        inside a residual block or an encoder layer, the block's input is cached.
        ``None`` when the family has no stages: run full forward passes.
    """
    stages = family_of(model).stages(model)
    if stages is None:
        return None
    cut = [i for i, s in enumerate(stages) if s.path and (s.path == path or s.path.startswith(path + "."))]
    if cut:
        i = cut[-1] + 1
        return _chain(stages[:i]), _chain(stages[i:]), True
    inside = [i for i, s in enumerate(stages)
              if any(m and (path == m or path.startswith(m + ".")) for m in (s.path, *s.members))]
    if not inside:
        return None
    i = inside[0]
    return _chain(stages[:i]), _chain(stages[i:]), False


def _chain(stages):
    def run(x):
        for s in stages:
            x = s.run(x)
        return x
    return run
