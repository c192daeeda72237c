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


def sweep(model, sequences, site: str, basis, counts, *, batch_size: int = 64, device=None) -> list[dict]:
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

    Returns
    -------
    list of dict
        ``{"site", "order" ("top" | "bottom"), "n_ablated", "correct", "tokens", "top1", "loss",
        "loss_increase"}`` per order and count; ``n_ablated == 0`` once, as ``"top"``.
    """
    K = len(basis.components_)
    base = causal_lm.next_token(model, sequences, batch_size=batch_size, device=device)
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
