"""Ablation in causal language models: basis vectors removed at an MLP site, next-token top-1 and loss.

Fig. 6's measure for a language model: remove the top (or bottom) k vectors of a basis from a
block's MLP neurons (:mod:`helpers.models.causal_lm` says where each family's are) at every
position, with the same :class:`~helpers.ablation.removal.Removal` as the vision networks', and read
the next-token top-1 accuracy and the mean cross-entropy over every position of held-out sequences
but the last. The loss's increase over the unablated network is the language-model field's reading
of what the removed vectors carried.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models import causal_lm
from .removal import Removal


@contextmanager
def removing(model, site: str, removal: Removal):
    """Apply ``removal`` to the vectors at ``site`` (every position) during the forwards inside.

    A gated MLP's site is written at its module's input, any other at its output
    (:func:`helpers.models.causal_lm.reads_input`); removing nothing leaves the network's output unchanged,
    bit for bit. The hook is removed on leaving, error or not.
    """
    module = model.get_submodule(site)

    def rows(x):
        return removal(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    if causal_lm.reads_input(model, site):
        handle = module.register_forward_pre_hook(
            lambda m, args: None if len(removal) == 0 else (rows(args[0]), *args[1:]))
    else:
        handle = module.register_forward_hook(
            lambda m, args, out: None if len(removal) == 0 else rows(out))
    try:
        yield model
    finally:
        handle.remove()


def sweep(model, sequences, site: str, basis, counts, *, batch_size: int = 64, device=None,
          base: dict | None = None) -> list[dict]:
    """Top-1 and loss with the top k and the bottom k vectors of ``basis`` removed at ``site``, for each k.

    Parameters
    ----------
    model : nn.Module
    sequences : array-like of int, shape (n, length)
    site : str
        A module path, e.g. one of :func:`helpers.models.causal_lm.mlp_sites`.
    basis : fitted basis
        Of the site's vectors (``components_`` (K, d), ordered by importance).
    counts : iterable of int
        Numbers of vectors removed (0 is the unablated network).
    base : dict, optional
        The unablated network's :func:`~helpers.models.causal_lm.next_token` on ``sequences``, if measured.

    Returns
    -------
    list of dict
        ``{"site", "order" ("top" | "bottom"), "n_ablated", "correct", "tokens", "top1", "loss",
        "loss_increase"}`` per order and count; ``n_ablated == 0`` once, as ``"top"``.
    """
    K = len(basis.components_)
    base = base or causal_lm.next_token(model, sequences, batch_size=batch_size, device=device)
    rows = [{"site": site, "order": "top", "n_ablated": 0, **base, "loss_increase": 0.0}]
    cache = {}
    plan = [(order, k) for k in sorted(set(int(c) for c in counts) - {0}) for order in ("top", "bottom")]
    for order, k in tqdm(plan, desc=f"ablation {site}", leave=False):
        if not 0 < k <= K:
            raise ValueError(f"counts holds {k}: the basis at {site} has {K} vectors; give counts in 0..{K}.")
        which = np.arange(k) if order == "top" else np.arange(K - k, K)
        with removing(model, site, Removal(basis, which, cache=cache)):
            found = causal_lm.next_token(model, sequences, batch_size=batch_size, device=device)
        rows.append({"site": site, "order": order, "n_ablated": k, **found, "loss_increase": found["loss"] - base["loss"]})
    return rows


ORDERS = {"top": "descending", "bottom": "ascending"}
"""The sweep's orders as ``ablation.csv`` names them (the vision networks' names)."""


LOGITS_BYTES = 1 << 28
"""The most bytes of logits one batch of the sweep holds (256 MiB)."""


def sweep_layer(model, dataset, layer: str, bases: dict, counts, *, indices=None, batch_size: int = 64,
                device=None, **_) -> list[dict]:
    """05's rows for one layer of a language model: :func:`sweep` for every basis, in ``ablation.csv``'s form.

    Parameters
    ----------
    dataset : helpers.text.sequences.TextSequences
    layer : str
        A module path of ``model`` (a site).
    bases : dict
        ``{basis: fitted basis}``.
    counts : list of int
        Each basis takes those up to its number of vectors.
    indices : array of int, optional
        The sequences measured (default: all).
    batch_size : int
        Sequences per forward, lowered so that one batch's logits take at most :data:`LOGITS_BYTES`.

    Returns
    -------
    list of dict
        ``layer, basis, order ("descending" | "ascending"), n_ablated, top1, loss, loss_increase`` for every
        basis, order and count (the unablated network's row under both orders, as the vision rows).
    """
    sequences = dataset.sequences if indices is None else dataset.sequences[np.asarray(indices)]
    with torch.no_grad():
        vocab = causal_lm.logits(model, torch.as_tensor(np.asarray(sequences[:1, :2], np.int64),
                                                        device=next(model.parameters()).device)).shape[-1]
    batch_size = max(1, min(int(batch_size), LOGITS_BYTES // (4 * vocab * sequences.shape[1])))
    base = causal_lm.next_token(model, sequences, batch_size=batch_size, device=device)
    out = []
    for name, basis in bases.items():
        K = len(basis.components_)
        rows = sweep(model, sequences, layer, basis, [c for c in counts if c <= K], batch_size=batch_size,
                     device=device, base=base)
        for r in rows:
            orders = ("top", "bottom") if r["n_ablated"] == 0 else (r["order"],)
            for order in orders:
                out.append({"layer": layer, "basis": name, "order": ORDERS[order], "n_ablated": r["n_ablated"],
                            "top1": r["top1"], "loss": r["loss"], "loss_increase": r["loss_increase"]})
    key = {"descending": 0, "ascending": 1}
    names = list(bases)
    return sorted(out, key=lambda r: (names.index(r["basis"]), key[r["order"]], r["n_ablated"]))
