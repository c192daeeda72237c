"""Causal language models — ``mini_gpt`` and Hugging Face's — and where their MLP neurons are read.

A transformer block's MLP maps the residual stream up to a hidden layer, applies a nonlinearity and
maps back down. Its *neurons* are the hidden units, read where the vision networks are read, before the
nonlinearity; for a gated MLP (Llama, Mistral, Qwen2: ``down_proj(act(gate_proj(x)) * up_proj(x))``) there
is no single pre-nonlinearity value, and the neuron is the gate × up product, the input of ``down_proj``.
Each family's site is written once, in :data:`MLP_SITES`; sites are named by module path, like every
other network's (``transformer.h.3.mlp.c_fc``).

Hugging Face models load through ``transformers``' own ``from_pretrained`` (a hub name, read from the
local cache when offline, or a folder saved with ``save_pretrained``); their untrained control is
``from_config`` of the same configuration with a seeded initialisation.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .gpt import MiniGPT


@dataclass(frozen=True)
class MLPSite:
    """Where a family's MLP neurons are read.

    Attributes
    ----------
    blocks : str
        Module path of the list of blocks (``"transformer.h"``).
    module : str
        Path inside a block of the module read (``"mlp.c_fc"``).
    reads : {"output", "input"}
        The module's output (the pre-nonlinearity hidden units) or its input (a gated MLP's product).
    neuron : str
        What one neuron is, in words.
    """

    blocks: str
    module: str
    reads: str
    neuron: str


_GATED = MLPSite("model.layers", "mlp.down_proj", "input",
                 "the gated MLP's hidden unit act(gate) × up, the input of down_proj")

MLP_SITES = {
    "mini_gpt": MLPSite("blocks", "mlp.fc", "output", "the MLP's hidden unit before the ReLU"),
    "gpt2": MLPSite("transformer.h", "mlp.c_fc", "output", "the MLP's hidden unit before the GELU"),
    "gpt_neox": MLPSite("gpt_neox.layers", "mlp.dense_h_to_4h", "output", "the MLP's hidden unit before the GELU"),
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
}
"""Each family's MLP site, by Hugging Face's ``model_type`` (``"mini_gpt"`` for the stand-in)."""


def family(model: nn.Module) -> str:
    """The key of :data:`MLP_SITES` for ``model``: ``"mini_gpt"`` or its configuration's ``model_type``."""
    if isinstance(model, MiniGPT):
        return "mini_gpt"
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in MLP_SITES:
        raise ValueError(f"no MLP site is known for a model of type {kind!r} ({type(model).__name__}); the "
                         f"known ones are {sorted(MLP_SITES)}. Name the modules to read by their paths "
                         "(model.named_modules()), or add the family to helpers.models.causal_lm.MLP_SITES.")
    return kind


def mlp_sites(model: nn.Module) -> list[str]:
    """The module path of every block's MLP site, first block first."""
    site = MLP_SITES[family(model)]
    blocks = model.get_submodule(site.blocks)
    return [f"{site.blocks}.{i}.{site.module}" for i in range(len(blocks))]


def reads_input(model: nn.Module, site: str) -> bool:
    """Whether ``site`` is read (and written) at its module's input: a gated MLP's site; else its output."""
    try:
        kind = family(model)
    except ValueError:
        return False
    return MLP_SITES[kind].reads == "input" and site in mlp_sites(model)


def logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``(batch, length, vocab)`` of ``mini_gpt`` or a Hugging Face causal LM."""
    out = model(tokens)
    return out if isinstance(out, torch.Tensor) else out.logits


@contextmanager
def reading(model: nn.Module, sites, positions: torch.Tensor | None = None):
    """Capture the MLP neurons (or any module's output) at ``sites`` during the forwards inside the block.

    Parameters
    ----------
    model : nn.Module
    sites : list of str
        Module paths; those of :func:`mlp_sites` are read as their family says (output or input), any
        other module by its output.
    positions : torch.Tensor of int, shape (batch,), optional
        One position per sequence: only that token's vector is kept, ``(batch, d)``; else ``(batch, length, d)``.

    Yields
    ------
    dict
        ``{site: tensor}`` of the last forward, filled as it runs. The hooks are removed on leaving, error
        or not.
    """
    found, handles = {}, []

    def keep(name, value):
        value = value.detach()
        if positions is not None:
            value = value[torch.arange(len(value), device=value.device), positions.to(value.device)]
        found[name] = value

    try:
        for name in sites:
            module = model.get_submodule(name)
            if reads_input(model, name):
                handles.append(module.register_forward_pre_hook(lambda m, args, name=name: keep(name, args[0])))
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, name=name: keep(
                    name, out[0] if isinstance(out, tuple) else out)))
        yield found
    finally:
        for handle in handles:
            handle.remove()


def load_hf(name: str, trained: bool = True, seed: int = 0) -> nn.Module:
    """A Hugging Face causal LM in eval mode, on the CPU.

    Parameters
    ----------
    name : str
        A hub name (``"gpt2"``, ``"EleutherAI/pythia-70m"``; read from the local cache when offline) or a
        folder written by ``save_pretrained``.
    trained : bool
        False: the untrained control, ``from_config`` of the same configuration, initialised with ``seed``.
    seed : int
    """
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise ImportError("Hugging Face models need `transformers`: pip install 'transformers>=4.57,<6' "
                          "(make setup installs it).") from None
    try:
        if trained:
            model = AutoModelForCausalLM.from_pretrained(name)
        else:
            config = AutoConfig.from_pretrained(name)
            with torch.random.fork_rng():  # the caller's random state is left as it was
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config)
    except OSError as e:
        raise OSError(f"hf:{name} could not be loaded ({str(e).splitlines()[0]}). Give a folder written by "
                      "save_pretrained, or a hub name this machine can download or finds in Hugging Face's "
                      "cache (HF_HOME; HF_HUB_OFFLINE=1 reads only the cache).") from None
    family(model)  # an unknown family is refused now, not at the first read
    return model.eval()


def next_token(model, sequences, *, batch_size: int = 64, device=None) -> dict:
    """Next-token top-1 and mean cross-entropy over ``sequences`` ``(n, length)``, every position but the last.

    Returns ``{"correct", "tokens", "top1", "loss"}`` (loss in nats per token, summed in float64). Memory:
    one batch's logits, ``batch_size × length × vocab × 4`` bytes.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sequences = torch.as_tensor(sequences, dtype=torch.long)
    correct, total, loss = 0, 0, 0.0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size].to(device)
            out = logits(model, batch[:, :-1]).float()
            target = batch[:, 1:]
            loss += F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="sum").double().item()
            correct += int((out.argmax(-1) == target).sum())
            total += target.numel()
    return {"correct": correct, "tokens": total, "top1": correct / total, "loss": loss / total}


def read_positions(model: nn.Module, sequences, positions, sites, *, batch_size: int = 128, device=None) -> dict:
    """The vectors at ``sites`` at one position per sequence, for every sequence.

    Parameters
    ----------
    model : nn.Module
    sequences : array-like of int, shape (n, length)
    positions : array-like of int, shape (n,)
    sites : list of str
    batch_size : int
    device : str or torch.device, optional
        Where the forwards run (default: the model's parameters' device).

    Returns
    -------
    dict
        ``{site: ndarray (n, d) float32}``. Memory: those arrays, ``n × d × 4`` bytes per site, and one
        batch's activations.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    sequences = torch.as_tensor(sequences, dtype=torch.long)
    positions = torch.as_tensor(positions, dtype=torch.long)
    chunks = {s: [] for s in sites}
    with torch.no_grad():
        for start in tqdm(range(0, len(sequences), batch_size), desc="token activations", leave=False):
            batch = sequences[start:start + batch_size].to(device)
            with reading(model, sites, positions[start:start + batch_size]) as found:
                logits(model, batch)
            for s in sites:
                chunks[s].append(found[s].float().cpu().numpy())
    return {s: np.concatenate(chunks[s]) for s in sites}
