"""The probe set of 08: which concepts a profile has (Broden, or the Fashion-MNIST annotator), the probe
images and their concept masks, and the mask of a formula.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images.broden import default_root
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



def broden_folder(p) -> str | None:
    """The Broden folder of profile ``p``: ``broden_root``, else (images other than Fashion-MNIST's) the folder
    ``python -m helpers.images.broden`` fills by default when it holds an ``index.csv``; ``None`` otherwise."""
    if p.broden_root:
        return p.broden_root
    found = default_root()
    wanted = p.dataset != "fashion_mnist" or p.concepts == "broden"
    return str(found) if wanted and (found / "index.csv").is_file() else None


def concepts_source(p) -> str | None:
    """Where the profile's concepts come from: ``"broden"``, ``"fashion"``, or ``None`` (none for this dataset).

    ``concepts="auto"``: Broden when :func:`broden_folder` finds one, the annotator on Fashion-MNIST."""
    if p.concepts != "auto":
        return p.concepts
    if p.dataset == "fashion_mnist" and not p.broden_root:
        return "fashion"
    return "broden" if broden_folder(p) else None


NO_CONCEPTS = ("08_compositional needs concepts for dataset={dataset!r}: fetch Broden with `make broden` "
               "(python -m helpers.images.broden), which puts it where this profile finds it, or give "
               "-p broden_root=<a Broden folder with index.csv, label.csv, images/>")


def broden_needs(p) -> list:
    """08's need (:func:`helpers.pipeline.provenance.register_need`): a Broden folder that has its index files."""
    from ..pipeline.provenance import Missing

    if concepts_source(p) != "broden":
        return []
    root = broden_folder(p)
    if root is None:
        return [Missing("Broden", f"no broden_root and none at the default place ({default_root()})", _FETCH)]
    lacking = [name for name in ("index.csv", "label.csv", "images") if not (Path(root) / name).exists()]
    if lacking:
        return [Missing("Broden", f"broden_root={root!r} lacks {', '.join(lacking)}",
                        f"give the folder that holds them (the release unpacks to broden1_224/), or {_FETCH}")]
    return []


_FETCH = "fetch it with `make broden` (python -m helpers.images.broden), or leave 08 out with --only"


def probe(p):
    """``(images, indices, concepts)``: the probe images for the model and their concepts, in one order.

    Fashion-MNIST: a seeded ``n_probe`` of the eval split with the annotator's
    concepts. Broden (:func:`broden_folder`): a seeded ``n_probe`` of its ``broden_subset``
    images, preprocessed as the model's weights ask but never cropped.
    """
    from ..images import concepts as cs
    from ..models.inputs import load_dataset
    from ..models.registry import preprocessing

    which = concepts_source(p)
    if which is None:
        raise ValueError(NO_CONCEPTS.format(dataset=p.dataset))
    if which == "broden":
        broden = cs.Broden(broden_folder(p), subset=None if p.broden_subset == "all" else p.broden_subset,
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
