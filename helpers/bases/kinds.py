"""The kinds of basis, each described once (:data:`KINDS`): its label, what one vector is called,
whether it is fitted after the ReLU and whether its codes take both signs. Every caller reads them here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """What a kind of basis is, said once: every caller reads it here.

    ``relu``: fitted on the post-ReLU activations (only layers followed by a
    ReLU have it); ``signed``: its codes take both signs, so each vector is
    read in both directions (08); ``unit``: what one vector is called.
    """

    name: str
    label: str
    unit: str
    relu: bool = False
    signed: bool = False

    @property
    def curve(self) -> str:
        """Its curve and file name: ``<name>_pre_relu`` or ``<name>_post_relu``."""
        return f"{self.name}_{'post' if self.relu else 'pre'}_relu"


KINDS = {
    "pca": Kind("pca", "PCA", "PC", signed=True),
    "neuron": Kind("neuron", "neurons", "neuron"),
    "ica": Kind("ica", "ICA", "IC", signed=True),
    "nmf": Kind("nmf", "NMF", "NMF", relu=True),
    "sae": Kind("sae", "SAE", "latent"),
    "random": Kind("random", "random", "random vector", signed=True),
}
"""The bases a profile can fit (setting ``bases``), in display order."""


def vectors(p, scale, layer: str) -> dict:
    """``{basis: number of vectors}`` the profile's bases will have at ``layer`` (NMF: only before a ReLU)."""
    d = scale.d(layer)
    sizes = {"pca": d, "neuron": d, "random": d, "ica": min(p.ica_components, d), "nmf": p.nmf_components,
             "sae": p.sae_latents or 4 * d}
    return {b: sizes[b] for b in p.bases if b != "nmf" or scale.relu.get(layer, False)}
