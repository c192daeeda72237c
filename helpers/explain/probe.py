"""The probe set of 08: which concepts a profile has (Broden, or the Fashion-MNIST annotator), the probe
images and their concept masks, and the mask of a formula.
"""
from __future__ import annotations

import numpy as np

from ..images.common import images_key, select

class _Take:
    """The concepts of some probe images only, in the order of ``indices``."""

    def __init__(self, concepts, indices):
        self.concepts, self.indices = concepts, np.asarray(indices)
        self.names, self.mask_size = concepts.names, tuple(concepts.mask_size)

    def __len__(self):
        return len(self.indices)

    def labels(self, i):
        return self.concepts.labels(int(self.indices[i]))

    def describe(self, i):
        return self.concepts.describe(int(self.indices[i]))

    def identity(self) -> dict:
        return {**self.concepts.identity(), "probe": images_key(self.concepts, self.indices)}



def concepts_source(p) -> str | None:
    """Where the profile's concepts come from: ``"broden"``, ``"fashion"``, or ``None`` (none for this dataset)."""
    if p.concepts != "auto":
        return p.concepts
    return "broden" if p.broden_root else "fashion" if p.dataset == "fashion_mnist" else None


NO_CONCEPTS = ("08_compositional needs concepts for dataset={dataset!r}: give broden_root=<the Broden folder> "
               "(index.csv, label.csv, images/), e.g. -p broden_root=/data/broden1_224.")


def probe(p):
    """``(images, indices, concepts)``: the probe images for the model and their concepts, in one order.

    Fashion-MNIST: a seeded ``n_probe`` of the eval split with the annotator's
    concepts. Broden (``broden_root``): a seeded ``n_probe`` of its ``broden_subset``
    images, preprocessed as the model's weights ask but never cropped.
    """
    from ..images import concepts as cs
    from ..models.inputs import load_dataset
    from ..models.registry import preprocessing

    which = concepts_source(p)
    if which is None:
        raise ValueError(NO_CONCEPTS.format(dataset=p.dataset))
    if which == "broden":
        broden = cs.Broden(p.broden_root, subset=None if p.broden_subset == "all" else p.broden_subset,
                           categories=p.broden_categories,
                           mask_size=(p.mask_size, p.mask_size) if p.mask_size else None)
        images = cs.BrodenImages(broden, preset=preprocessing(p.model))
        indices = select(len(images), p.n_probe, p.seed)
        return images, indices, _Take(broden, indices)
    images = load_dataset(p, p.eval_split)
    indices = select(len(images), p.n_probe, p.seed)
    return images, indices, cs.FashionConcepts.of(images, indices)


def formula_mask(concepts, i: int, formula) -> np.ndarray:
    """The formula's mask (H, W) on probe image ``i`` (all False for no formula)."""
    pixel, image = concepts.labels(i)
    pixel = np.asarray(pixel).reshape(-1, *concepts.mask_size)
    image = set(np.asarray(image).tolist())
    if formula is None:
        return np.zeros(concepts.mask_size, bool)
    return formula.evaluate(lambda c: (pixel == c).any(0) | (c in image))
