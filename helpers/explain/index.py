"""The concept index: every pixel of the probe set as a signature, so that formulas are scored in counts.

How it is fast and exact
------------------------
Every pixel of the probe set carries a *signature*: the set of concepts at it
(its pixel-level labels and its image's image-level labels).
:class:`ConceptIndex` stores one signature id per pixel, the pixel count of
each signature and a sparse signature × concept membership matrix ``P``. A
formula is a boolean function of the concepts, so its mask is a set of
signatures. For a beam formula ``F`` and the unit mask ``A`` (per-signature
counts ``a``), the counts of every concept ``L`` inside ``F`` and inside
``F ∧ A`` are two sparse products, ``Pᵀ(n·F)`` and ``Pᵀ(a·F)``; from them and
``|L|``, ``|A ∧ L|`` follow the IoUs of all ``F OR L``, ``F AND L`` and
``F AND NOT L`` at once — in integers, so the IoUs are those of the masks
themselves, and no candidate's mask is ever built. A unit costs one bilinear
upsampling of the maps of the images where it fires, one ``bincount`` over its
mask's pixels, and per expansion a few sparse products of size ``nnz(P)``.
:func:`optimal` adds the pair counts ``|X ∧ L|`` of all concepts (``Pᵀ diag(n) P``,
once per index), from which every formula of length 2 is scored at once, and
per expanded prefix group the triple counts ``|X ∧ Y ∧ L|``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm


# -- the concept index ----------------------------------------------------------------------------------
@dataclass
class ConceptIndex:
    """Signatures of every pixel of the probe set (see the module docstring).

    Attributes
    ----------
    sig : ndarray of shape (n_images * H * W,), int32
        Signature id of every pixel (image-major, then row, column).
    count : ndarray of shape (S,), int64
        Pixels per signature.
    member : scipy.sparse.csr_matrix of shape (S, C), int64
        1 where a signature holds a concept.
    image_concepts : scipy.sparse.csr_matrix of shape (n_images, C), bool
        The concepts present somewhere in each image.
    size : (H, W)
    concept_pixels : ndarray of shape (C,), int64
        ``|L|`` of every concept.

    Memory: 4 bytes per probe pixel plus ``nnz(member)``; built one image at a time.
    :meth:`pair_counts` (for :func:`optimal`) adds ``8 K²`` bytes, ``K`` the concepts that occur.
    """

    sig: np.ndarray
    count: np.ndarray
    member: sp.csr_matrix
    image_concepts: sp.csr_matrix
    size: tuple
    concept_pixels: np.ndarray = field(init=False)
    _pairs: tuple = field(default=None, init=False, repr=False)
    _prefix_pixels: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.member_t = self.member.T.tocsr()
        self.concept_pixels = self.member_t @ self.count

    def pair_counts(self) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
        """``(present, P, G)``: the concepts that occur, ascending (0 left out); ``member`` restricted to them
        (S × K, csr); ``G[i, j] = |L_i ∧ L_j|`` (K × K, int64, ``G[i, i] = |L_i|``). Made once, then kept.
        """
        if self._pairs is None:
            present = np.flatnonzero(self.concept_pixels > 0)
            present = present[present > 0]
            P = self.member[:, present].tocsr()
            G = np.asarray((P.T @ sp.diags(self.count, dtype=np.int64) @ P).toarray(), np.int64)
            self._pairs = (present, P, G)
        return self._pairs

    def column(self, c: int) -> np.ndarray:
        """Which signatures hold concept ``c``, bool of shape (S,)."""
        out = np.zeros(len(self.count), bool)
        out[self.member_t.indices[self.member_t.indptr[c]:self.member_t.indptr[c + 1]]] = True
        return out

    @property
    def n_images(self) -> int:
        return self.image_concepts.shape[0]

    @classmethod
    def build(cls, concepts, chunk: int = 64, desc: str = "concept index") -> "ConceptIndex":
        """Index a :class:`helpers.images.concepts.Concepts` source (every probe image, in order).

        ``chunk`` images at a time: their label maps are sorted per pixel (a
        concept repeated at a pixel counts once) and the distinct label sets
        found by hashing (``pandas.factorize``), not by sorting rows.
        """
        H, W = concepts.mask_size
        C, n, HW = len(concepts.names), len(concepts), H * W
        ids, per_image = {}, []
        sig = np.empty(n * HW, np.int32)
        for start in tqdm(range(0, n, chunk), desc=desc, leave=False):
            stop = min(start + chunk, n)
            maps, images = [], []
            for i in range(start, stop):
                pixel, image = concepts.labels(i)
                pixel = np.asarray(pixel, np.int64).reshape(-1, HW)
                image = np.unique(np.asarray(image, np.int64))
                _check_numbers(pixel, image, C, concepts, i)
                maps.append(pixel)
                images.append(tuple(image[image > 0]))
            rows = np.zeros((max(len(m) for m in maps) + 1, (stop - start) * HW), np.int64)
            for j, m in enumerate(maps):
                rows[:len(m), j * HW:(j + 1) * HW] = m
            rows.sort(axis=0)
            rows[1:][rows[1:] == rows[:-1]] = 0  # each pixel's labels, sorted, repeats dropped
            rows.sort(axis=0)
            sets = {s: k for k, s in enumerate(dict.fromkeys(images))}
            code = np.repeat([sets[s] for s in images], HW)  # the image-level labels, as a number
            for row in rows:
                code = pd.factorize(code * C + row)[0]  # < pixels x C: no overflow
            first = np.unique(code, return_index=True)[1]
            image_of = first // HW
            local = np.array([ids.setdefault((*rows[rows[:, f] > 0, f], -1, *images[image_of[k]]), len(ids))
                              for k, f in enumerate(first)], np.int32)
            found = local[code]
            sig[start * HW:stop * HW] = found
            per_image.extend(np.unique(found[j * HW:(j + 1) * HW]) for j in range(stop - start))
        keys = list(ids)
        r = np.repeat(np.arange(len(keys)), [len(k) - 1 for k in keys])
        c = np.array([x for k in keys for x in k if x >= 0], np.int64)
        member = sp.csr_matrix((np.ones(len(c), np.int64), (r, c)), shape=(len(keys), C))
        member.data[:] = 1  # a concept both pixel- and image-level counts once
        count = np.bincount(sig, minlength=len(keys)).astype(np.int64)
        img_sig = sp.csr_matrix((np.ones(sum(map(len, per_image)), np.int64),
                                 (np.repeat(np.arange(n), [len(x) for x in per_image]),
                                  np.concatenate(per_image) if per_image else np.zeros(0, np.int64))),
                                shape=(n, len(keys)))
        return cls(sig, count, member, (img_sig @ member) > 0, (H, W))

    def unit_counts(self, pixels) -> np.ndarray:
        """``a``: pixels of the unit's mask per signature, shape (S,)."""
        return np.bincount(self.sig[pixels], minlength=len(self.count)).astype(np.int64)


def _check_numbers(pixel, image, C, concepts, i):
    top = max(int(pixel.max(initial=0)), int(image.max(initial=0)))
    if top >= C or min(int(pixel.min(initial=0)), int(image.min(initial=0))) < 0:
        raise ValueError(f"probe image {i} ({concepts.describe(i)}) has concept number {top}, outside "
                         f"0..{C - 1} of the concepts' names; the labels do not match the label list.")
