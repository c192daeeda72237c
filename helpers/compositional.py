"""Compositional explanations (Mu & Andreas, NeurIPS 2020): unit masks, IoU, beam search, certified optimum.

A unit (a neuron, or the projection on a principal component, each sign its
own unit) is explained by the logical formula over concepts whose mask best
overlaps the unit's mask, by intersection over union over every pixel of the
probe set. The defaults are those of the reference code:

1. threshold: the unit's top ``quantile = 0.005`` over the probe set at the
   map's own resolution (:func:`threshold`, exact);
2. the map is upsampled bilinearly with half-pixel centres
   (``align_corners=False``) to the mask size; the unit's mask is
   ``upsampled > threshold`` (:func:`unit_pixels`);
3. ``IoU = |M ∧ A| / (|M| + |A| − |M ∧ A|)`` (:func:`iou`);
4. formulas grow left-deep, ``F OR L``, ``F AND L``, ``F AND NOT L``, in a beam
   of 5 started from the best primitives with IoU > 0, ``max_length − 1``
   expansions, each combining every beam formula with every concept of the
   probe set (``candidates="all"``, the reference's), shorter formulas kept
   (:func:`search`); ``candidates="firing"`` (only the concepts present in an
   image where the unit fires) is a weaker option, faster only where every
   candidate costs a mask;
5. ranking by the reference's value ``I / (U + 1e-10)`` in float64 with stable
   sorts (:func:`reference_score`: of two exactly tied formulas the larger
   union first), IoUs reported exactly.

:func:`optimal` finds the best formula of up to 3 concepts among all of them,
not only those a beam reaches, and proves it: exhaustively for few concepts, by
branch and bound with admissible IoU bounds for many (Broden's ~1,200).

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
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

OPS = ("OR", "AND", "AND NOT")
"""The operators, in the order candidates are enumerated (as the reference: per beam formula, per concept, per op)."""


# -- the unit's mask ------------------------------------------------------------------------------------
def threshold(values, quantile: float = 0.005) -> float:
    """The unit's threshold: the ``1 − quantile`` quantile of all its values (numpy's linear interpolation).

    Exact for any number of values (``np.partition``, not ``torch.quantile``,
    which refuses inputs over 16 M elements). Memory: one copy of ``values``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("threshold() of no values: the probe set has no image.")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1), e.g. 0.005 (the top 0.5 %).")
    pos = (v.size - 1) * (1 - quantile)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    part = np.partition(v, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def upsample(maps, size, device=None) -> torch.Tensor:
    """Maps (n, h, w) bilinearly upsampled to ``size`` (H, W), half-pixel centres, as float32."""
    x = torch.as_tensor(np.ascontiguousarray(maps), dtype=torch.float32, device=device)
    return F.interpolate(x[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def unit_pixels(maps, thr: float, size, device=None, chunk: int = 256) -> np.ndarray:
    """Global pixel indices (``image · H · W + y · W + x``) of the unit's mask, ``upsampled > thr``.

    Only images whose map exceeds ``thr`` somewhere are upsampled: bilinear
    upsampling is a convex combination of the map's values, so the others have
    an empty mask. ``maps``: (n, h, w). Memory: ``chunk · H · W`` floats.
    """
    maps = np.asarray(maps)
    H, W = size
    firing = np.flatnonzero(maps.reshape(len(maps), -1).max(1) > thr)
    out = []
    for s in range(0, len(firing), chunk):
        rows = firing[s:s + chunk]
        up = upsample(maps[rows], size, device)
        img, pix = torch.nonzero(up.reshape(len(rows), -1) > thr, as_tuple=True)
        out.append(rows[img.cpu().numpy()].astype(np.int64) * (H * W) + pix.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def iou(intersection, mask, unit):
    """``I / (|M| + |A| − I)`` elementwise (0 where both masks are empty), float64."""
    inter = np.asarray(intersection, np.float64)
    union = np.asarray(mask, np.float64) + float(unit) - inter
    return np.divide(inter, union, out=np.zeros(np.broadcast(inter, union).shape), where=union > 0)


# -- formulas -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Formula:
    """A left-deep formula: ``first`` then ``(op, concept)`` steps; ``len`` is its number of concepts."""

    first: int
    steps: tuple = ()

    def __len__(self):
        return 1 + len(self.steps)

    def then(self, op: str, concept: int) -> "Formula":
        return Formula(self.first, self.steps + ((op, int(concept)),))

    def text(self, names) -> str:
        """``(water OR river) AND NOT blue``."""
        out = names[self.first]
        for i, (op, c) in enumerate(self.steps):
            out = f"{'(' + out + ')' if i else out} {op} {names[c]}"
        return out

    def evaluate(self, column) -> np.ndarray:
        """The formula's mask, given ``column(c)``: the boolean mask of concept ``c`` (any shape)."""
        mask = column(self.first)
        for op, c in self.steps:
            other = column(c)
            mask = mask | other if op == "OR" else mask & other if op == "AND" else mask & ~other
        return mask


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
        """Index a :class:`helpers.concepts.Concepts` source (every probe image, in order).

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


# -- the search -----------------------------------------------------------------------------------------
TIE = 1e-10
"""The reference adds it to every union: ``I / (U + 1e-10)``, the value it ranks by (:func:`reference_score`)."""


def reference_score(intersection, union):
    """The reference's ranking value ``I / (U + 1e-10)``, float64, computed as the reference does.

    The integers are converted to float64 (exact below 2^53), ``1e-10`` is added
    to the union, then the division: IEEE operations, so the bits equal the
    reference's. Of two formulas with the same exact IoU ``q = I / U`` the one with
    the larger union has the larger value (``q · U / (U + 1e-10)``), as long as
    ``1e-10 / U`` shows in float64 (unions below about 2^20 pixels); above, the two
    are equal and the enumeration order decides. The value is only for ranking:
    IoUs are reported exactly, ``I / U`` (:func:`iou`).
    """
    return np.asarray(intersection, np.float64) / (np.asarray(union, np.float64) + TIE)


def _exact(inter, union) -> float:
    return float(inter) / float(union) if union else 0.0


@dataclass
class Explanation:
    """A unit's best formula, its IoU, the best primitive, and the best at each maximum length.

    ``by_length[k]`` / ``formulas[k]``: the best IoU / formula with at most
    ``k + 1`` concepts (the answer of a search with ``max_length = k + 1``).
    IoUs are exact (``I / U``); the ranking is the reference's (:func:`reference_score`).
    """

    formula: Formula | None
    iou: float
    primitive: Formula | None
    iou_length1: float
    by_length: list
    unit_pixels: int
    formulas: list = field(default_factory=list)

    def at(self, length: int) -> "Explanation":
        """The explanation a search with ``max_length = length`` gives (``length`` <= the one searched)."""
        k = min(length, len(self.by_length)) - 1
        return Explanation(self.formulas[k] if self.formulas else None, self.by_length[k], self.primitive,
                           self.iou_length1, self.by_length[:k + 1], self.unit_pixels, self.formulas[:k + 1])


@dataclass
class Optimum(Explanation):
    """The result of :func:`optimal`: an :class:`Explanation` whose formula is certified optimal.

    ``method``: ``"exhaustive"`` or ``"bound"`` (branch and bound); ``prefixes``:
    the length-2 prefixes (``3 K²`` for ``K`` concepts; 0 when ``max_length < 3``);
    ``expanded``: those whose every one-step extension was scored exactly;
    ``pruned``: the others (bounded below the incumbent, or dominated, see
    :func:`optimal`); ``seed_iou``: the IoU of the seed (the beam's answer) the
    bound started from.
    """

    method: str = ""
    prefixes: int = 0
    expanded: int = 0
    pruned: int = 0
    seed_iou: float = 0.0


def candidate_counts(index: ConceptIndex, a, beam: list) -> tuple[np.ndarray, np.ndarray]:
    """``(I, U)``: intersection and union with the unit of every ``(formula, op, concept)`` expansion.

    Both int64 of shape (len(beam), 3, C), exact; ``a``: the unit's pixels per
    signature (:meth:`ConceptIndex.unit_counts`). Cost: two sparse products of
    size ``nnz(P) · len(beam)``; memory: ``S · len(beam)`` int64 twice.
    """
    return _expansion_counts(index, a, np.stack([f.evaluate(index.column) for f in beam], axis=1))


def _expansion_counts(index: ConceptIndex, a, inside) -> tuple[np.ndarray, np.ndarray]:
    """:func:`candidate_counts` of the formulas whose signature sets are the columns of ``inside`` (S, B), bool."""
    P = index.member_t
    f, fa = index.count[:, None] * inside, a[:, None] * inside
    FL, FAL = P @ f, P @ fa  # (C, B): |F ∧ L|, |F ∧ A ∧ L|
    sF, sFA = f.sum(0), fa.sum(0)
    L, AL, A = index.concept_pixels[:, None], (P @ a)[:, None], int(a.sum())
    inter = np.stack([sFA + AL - FAL, FAL, sFA - FAL])  # F OR L, F AND L, F AND NOT L
    mask = np.stack([sF + L - FL, FL, sF - FL])
    return inter.transpose(2, 0, 1), (mask + A - inter).transpose(2, 0, 1)


def candidate_scores(index: ConceptIndex, a, beam: list) -> np.ndarray:
    """Exact IoUs of every ``(formula, op, concept)`` expansion, shape (len(beam), 3, C) (:func:`candidate_counts`)."""
    inter, union = candidate_counts(index, a, beam)
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def search(index: ConceptIndex, pixels, *, beam: int = 5, max_length: int = 3,
           candidates: str = "all") -> Explanation:
    """The reference's beam search for the unit whose mask is ``pixels`` (global pixel indices).

    The beam starts from the top ``beam`` concepts with IoU > 0; each of the
    ``max_length − 1`` expansions combines every beam formula with every
    candidate concept by each operator, and the old and new formulas are cut to
    the top ``beam``.

    candidates : ``"all"`` (default, the reference's ``bs_labs = g["labels"]``)
        or ``"firing"``
        ``"all"``: every concept that occurs in the probe set. ``"firing"``: only
        the concepts present in an image where the unit fires, a speed option
        where every candidate costs a mask (the reference's approach: time in
        proportion to the candidates, see ``bench/compositional.py``); here the
        counts of all concepts come from the same sparse products either way,
        so it saves little (0.9–1.5× in the bench). Its cost: ``F AND NOT C`` is out of reach when ``C``
        never occurs where the unit fires, however many false positives of ``F``
        elsewhere it removes (``"all"`` can reach IoU 1 where ``"firing"`` stays
        below).

    Ranking as the reference's: by :func:`reference_score` (``I / (U + 1e-10)``,
    so of exact ties the larger union first), with stable sorts in the
    reference's enumeration order (per beam formula, per concept, per op in
    ``OPS``; old beam formulas before new ones; a formula reached twice is kept
    twice, as the reference's formulas hash but do not compare equal).
    Reported IoUs are exact. ``by_length[k]`` is the best IoU with formulas of at
    most ``k + 1`` concepts.
    """
    if candidates not in ("firing", "all"):
        raise ValueError(f"candidates={candidates!r}: use 'all' (the reference's) or 'firing'.")
    if beam < 1 or max_length < 1:
        raise ValueError(f"beam={beam}, max_length={max_length}: both must be at least 1 (defaults 5 and 3).")
    pixels = np.asarray(pixels, np.int64)
    a = index.unit_counts(pixels)
    A = int(a.sum())
    HW = index.size[0] * index.size[1]
    allowed = index.concept_pixels > 0  # the concepts of the probe set (the reference's mask catalog)
    if candidates == "firing":
        firing = np.unique(pixels // HW)
        allowed &= np.asarray(index.image_concepts[firing].sum(0)).ravel() > 0
    allowed[0] = False  # 0 = no concept
    inter1 = index.member_t @ a
    union1 = index.concept_pixels + A - inter1
    prim = reference_score(inter1, union1)
    prim[~allowed] = -1
    order = np.argsort(-prim, kind="stable")
    start = [c for c in order[:beam] if prim[c] > 0]
    if not start:
        return Explanation(None, 0.0, None, 0.0, [0.0] * max_length, A, [None] * max_length)
    kept = [(float(prim[c]), _exact(inter1[c], union1[c]), Formula(int(c))) for c in start]
    by_length, formulas = [kept[0][1]], [kept[0][2]]
    concepts = np.flatnonzero(allowed)
    for _ in range(max_length - 1):
        inter, union = candidate_counts(index, a, [f for _, _, f in kept])
        inter = inter[:, :, concepts].transpose(0, 2, 1).reshape(-1)  # order: beam, concept, op
        union = union[:, :, concepts].transpose(0, 2, 1).reshape(-1)
        scores = reference_score(inter, union)
        top = np.argsort(-scores, kind="stable")[:beam]
        new = [(float(scores[t]), _exact(inter[t], union[t]), kept[t // (3 * len(concepts))][2].then(
            OPS[t % 3], concepts[(t // 3) % len(concepts)])) for t in top]
        merged = kept + new
        rank = np.argsort([-s for s, _, _ in merged], kind="stable")[:beam]
        kept = [merged[r] for r in rank]
        by_length.append(kept[0][1])
        formulas.append(kept[0][2])
    first = Formula(int(start[0]))
    return Explanation(kept[0][2], kept[0][1], first, _exact(inter1[start[0]], union1[start[0]]), by_length, A,
                       formulas)


# -- the certified optimum ------------------------------------------------------------------------------
EXHAUSTIVE_PREFIXES = 5000
"""``optimal(method="auto")`` scores every extension when there are at most this many length-2 prefixes (``3 K²``)."""

SLACK = 1e-9
"""A prefix is pruned when its bound is below ``(1 − SLACK)`` times the incumbent's IoU. The slack only widens what
is expanded: it covers the rounding of the bounds (a few ulps, relative: sums of nonnegative terms, products,
quotients) and the reference's ``1e-10`` (its score is at most the exact IoU and at least ``1 − 1e-10`` times
it), so every pruned extension has a reference score strictly below the incumbent's."""


class _Best:
    """The incumbent: the best formula so far by (reference score, descending; enumeration key, ascending).

    Keys: ``(1, X)``, ``(2, X, L, op)``, ``(3, X, Y, op1, L, op2)`` in the concept
    order (0 .. K − 1) of the present concepts: shorter first, then the
    reference's order (per beam formula, per concept, per op).
    """

    def __init__(self):
        self.score, self.key, self.inter, self.union = -1.0, None, 0, 0

    def offer(self, score, key, inter, union):
        if score > self.score or (score == self.score and self.key is not None and key < self.key):
            self.score, self.key, self.inter, self.union = float(score), key, int(inter), int(union)

    def take(self, other: "_Best"):
        if other.key is not None:
            self.offer(other.score, other.key, other.inter, other.union)

    def copy(self) -> "_Best":
        out = _Best()
        out.__dict__.update(self.__dict__)
        return out

    @property
    def iou(self) -> float:
        return _exact(self.inter, self.union)

    def formula(self, present) -> Formula | None:
        if self.key is None or self.score <= 0:
            return None
        k = self.key
        if k[0] == 1:
            return Formula(int(present[k[1]]))
        if k[0] == 2:
            return Formula(int(present[k[1]])).then(OPS[k[3]], present[k[2]])
        return Formula(int(present[k[1]])).then(OPS[k[3]], present[k[2]]).then(OPS[k[5]], present[k[4]])


def _offer_array(best: _Best, scores, inter, union, key_of):
    """Offer the first maximum of ``scores`` (any shape; flat order = enumeration order) to ``best``."""
    if scores.size:
        t = int(np.argmax(scores))
        best.offer(scores.flat[t], key_of(np.unravel_index(t, scores.shape)), inter.flat[t], union.flat[t])


class _Pairs:
    """Exact statistics of every formula of length 1 and 2 over the present concepts, for one unit.

    ``n1``/``a1`` (K,): ``|X|``, ``|X ∧ A|``; ``inter2``/``mask2`` (K, 3, K):
    ``|F ∧ A|``, ``|F|`` of ``F = X op L`` (op in ``OPS``), from the pair counts
    ``Gn[X, L] = |X ∧ L|`` (the index's, unit-independent) and
    ``Ga[X, L] = |X ∧ L ∧ A|`` (one sparse product over the signatures the unit
    touches).
    """

    def __init__(self, index: ConceptIndex, a):
        self.present, self.P, self.Gn = index.pair_counts()
        self.a, self.A = a, int(a.sum())
        touched = np.flatnonzero(a)
        Pa = self.P[touched]
        self.Ga = np.asarray((Pa.T @ sp.diags(a[touched], dtype=np.int64) @ Pa).todense(), np.int64)
        self.n1, self.a1 = np.diagonal(self.Gn).copy(), np.diagonal(self.Ga).copy()
        X, L = self.a1[:, None], self.a1[None, :]
        self.inter2 = np.stack([X + L - self.Ga, self.Ga, X - self.Ga], axis=1)
        X, L = self.n1[:, None], self.n1[None, :]
        self.mask2 = np.stack([X + L - self.Gn, self.Gn, X - self.Gn], axis=1)

    @property
    def K(self) -> int:
        return len(self.present)

    def best_up_to_2(self) -> tuple[_Best, _Best]:
        """The best formula of length 1, and of length at most 2."""
        A, one = self.A, _Best()
        u1 = self.n1 + A - self.a1
        _offer_array(one, reference_score(self.a1, u1), self.a1, u1, lambda t: (1, int(t[0])))
        two = one.copy()
        inter2 = self.inter2.transpose(0, 2, 1)  # (X, L, op): the enumeration order
        u2 = self.mask2.transpose(0, 2, 1) + A - inter2
        _offer_array(two, reference_score(inter2, u2), inter2, u2, lambda t: (2, int(t[0]), int(t[1]), int(t[2])))
        return one, two

    def bounds(self) -> np.ndarray:
        """Upper bounds, (K, 3, K), on the exact IoU of every one-step extension of every prefix ``X op1 Y``.

        ``-inf`` where no extension can rank first (dominated, see :func:`optimal`).
        Memory: about ten (K, K) float64 arrays at a time.
        """
        A, K = float(self.A), self.K
        a1, fp1 = self.a1.astype(np.float64), (self.n1 - self.a1).astype(np.float64)
        u2 = self.mask2 + self.A - self.inter2
        q2 = self.inter2 / u2  # u2 >= A > 0
        best2 = q2.max(axis=2)  # (K, 3): the best IoU of Z op2 L over every L
        best1 = float((self.a1 / (self.n1 + self.A - self.a1)).max())
        out_of = (self.a1[None, :] - self.Ga).max(axis=1).astype(np.float64)  # max_L |L ∧ A ∖ Z|
        upper = np.arange(K)[:, None] > np.arange(K)[None, :]  # X > Y: Y op X is the same mask, earlier
        out = np.empty((K, 3, K))
        for o1 in range(3):
            inter = self.inter2[:, o1].astype(np.float64)
            union = u2[:, o1].astype(np.float64)
            fp = (self.mask2[:, o1] - self.inter2[:, o1]).astype(np.float64)
            gain = np.minimum(A - inter, float(self.a1.max()))  # max_L |L ∧ A ∖ Q|
            if o1 == 0:
                gain = np.minimum(gain, np.minimum(out_of[:, None], out_of[None, :]))
            b = [np.minimum((inter + gain) / union, best1 + inter / A), inter / A, inter / A]  # by op2
            if o1 == 0:  # Q ⊇ X and Q ⊇ Y
                e_x, e_y = inter - a1[:, None], inter - a1[None, :]
                b[0] = np.minimum(b[0], np.minimum(best2[:, 0, None] + e_x / (A + fp1[:, None]),
                                                   best2[None, :, 0] + e_y / (A + fp1[None, :])))
                for o2 in (1, 2):
                    b[o2] = np.minimum(b[o2], np.minimum(best2[:, o2, None] + e_x / A, best2[None, :, o2] + e_y / A))
                dominated = (e_x == 0) | (e_y == 0)
            else:  # Q ⊆ X (and Q ⊆ Y for AND)
                d_x = fp1[:, None] - fp
                for o2 in range(3):
                    b[o2] = np.minimum(b[o2], best2[:, o2, None] * (1 + d_x / A))
                dominated = d_x == 0
                if o1 == 1:
                    d_y = fp1[None, :] - fp
                    for o2 in range(3):
                        b[o2] = np.minimum(b[o2], best2[None, :, o2] * (1 + d_y / A))
                    dominated |= d_y == 0
            if o1 < 2:
                dominated |= upper
            dominated |= inter == 0
            out[:, o1] = np.where(dominated, -np.inf, np.maximum(np.maximum(b[0], b[1]), b[2]))
        return out

    def extensions(self, index: ConceptIndex, X: int, work: list, best: _Best, chunk: int):
        """Score every one-step extension of the prefixes ``X op1 Y`` exactly; ``work``: (op1, Ys) pairs.

        ``|Q ∧ L|`` follows from the pair counts and the triple counts
        ``T[Y, L] = |X ∧ Y ∧ L|``: one sparse product over the signatures that hold
        ``X`` (with weights ``n``, and with ``a`` over those the unit touches).
        """
        ys_all = np.unique(np.concatenate([ys for _, ys in work]))
        sig = index.member_t.indices[index.member_t.indptr[self.present[X]]:index.member_t.indptr[self.present[X] + 1]]
        Px = self.P[sig]
        Tn = np.asarray((Px[:, ys_all].T @ (sp.diags(index.count[sig], dtype=np.int64) @ Px)).todense(), np.int64)
        hit = sig[self.a[sig] > 0]
        Pa = self.P[hit]
        Ta = np.asarray((Pa[:, ys_all].T @ (sp.diags(self.a[hit], dtype=np.int64) @ Pa)).todense(), np.int64)
        A = self.A
        for o1, ys in work:
            rows = np.searchsorted(ys_all, ys)
            for s in range(0, len(ys), chunk):
                y, r = ys[s:s + chunk], rows[s:s + chunk]
                stats = []
                for G, T, one, q in ((self.Gn, Tn, self.n1, self.mask2), (self.Ga, Ta, self.a1, self.inter2)):
                    t = T[r]
                    ql = (G[X][None, :] + G[y] - t) if o1 == 0 else t if o1 == 1 else (G[X][None, :] - t)
                    qq = q[X, o1, y][:, None]
                    stats.append(np.stack([qq + one[None, :] - ql, ql, qq - ql], axis=-1))  # (m, K, 3)
                mask, inter = stats
                union = mask + A - inter
                _offer_array(best, reference_score(inter, union), inter, union,
                             lambda t, y=y: (3, X, int(y[t[0]]), o1, int(t[1]), int(t[2])))


def _exact_counts(index: ConceptIndex, a, formula: Formula) -> tuple[int, int]:
    inside = formula.evaluate(index.column)
    inter, mask = int(a[inside].sum()), int(index.count[inside].sum())
    return inter, mask + int(a.sum()) - inter


def _key(formula: Formula, present) -> tuple | None:
    """The enumeration key of a formula (see :class:`_Best`), or None if it holds a concept that never occurs."""
    concepts = [formula.first] + [c for _, c in formula.steps]
    pos = np.searchsorted(present, concepts)
    if np.any(pos >= len(present)) or np.any(present[np.minimum(pos, len(present) - 1)] != concepts):
        return None
    ops = [OPS.index(op) for op, _ in formula.steps]
    if len(formula) == 1:
        return (1, int(pos[0]))
    if len(formula) == 2:
        return (2, int(pos[0]), int(pos[1]), ops[0])
    return (3, int(pos[0]), int(pos[1]), ops[0], int(pos[2]), ops[1])


def optimal(index: ConceptIndex, pixels, *, max_length: int = 3, lower=None, beam: int = 5,
            method: str = "auto", chunk: int = 1 << 20) -> Optimum:
    """The best formula of at most ``max_length`` (1 to 3) concepts for the unit, with a proof of optimality.

    The formulas are those of :func:`search` (left-deep, ``OR``, ``AND``,
    ``AND NOT``, each concept any that occurs in the probe set, concept 0 left
    out), all of them, not only those a beam reaches. They are ranked by the
    reference's value (:func:`reference_score`, exact ties to the larger union),
    then shorter first, then the reference's enumeration order (first concept,
    then per step the concept, then the op); the returned formula is the first
    in this order, its IoU exact. ``by_length``/``formulas`` hold the best of at
    most 1, 2, ... concepts (lengths 1 and 2 are always enumerated in full).

    method : ``"auto"`` (default), ``"exhaustive"`` or ``"bound"``
        ``"exhaustive"`` scores every extension of every length-2 prefix with
        the signature products of :func:`candidate_counts` (batches of
        ``max(1, chunk // (4 S))`` prefixes, ``S`` signatures); ``"bound"`` is
        the branch and bound below; ``"auto"`` is exhaustive when there are at
        most :data:`EXHAUSTIVE_PREFIXES` prefixes (``3 K²``; e.g. the
        Fashion-MNIST annotator's 27 concepts, 2,187 prefixes) and bounds
        otherwise (Broden's ~1,200: 4.3 M prefixes). Both give the same answer.
    lower : an :class:`Explanation`, a :class:`Formula` or None
        A formula whose IoU seeds the bound (a valid lower bound on the
        optimum); None (default) runs ``search(index, pixels, beam=beam,
        max_length=max_length)`` for it (``beam=0``: no seed). The seed is a
        candidate itself; it changes what is pruned, never the answer.

    Branch and bound
    ----------------
    Notation: ``A`` the unit's mask, ``|·|`` pixel counts, ``I(N) = |N ∧ A|``,
    ``FP(N) = |N ∖ A|``, so ``U(N) = A + FP(N)`` and ``IoU(N) = I / (A + FP)``.
    Every formula of length 1 and 2 is scored exactly in bulk: with the pair
    counts ``|X ∧ L|`` (``Pᵀ diag(n) P``, kept by the index) and ``|X ∧ L ∧ A|``
    (``Pᵀ diag(a) P`` over the signatures the unit touches), ``X OR L``,
    ``X AND L``, ``X AND NOT L`` follow by inclusion–exclusion. The incumbent is
    the best of these and of the seed. Each length-2 prefix ``Q = X op1 Y`` gets
    an upper bound on the IoU of its best one-step extension ``Q op2 L`` (below);
    the prefixes, grouped by their first concept ``X``, groups in the order of
    their best bound, are then expanded exactly (every ``L``, every ``op2``),
    each group only for the prefixes whose bound is at least
    ``(1 − SLACK) ·`` the incumbent's IoU at that moment, and the search stops
    when no group's best bound reaches it. Every pruned extension has an IoU
    strictly below the incumbent's, hence also a lower reference score: the
    answer is the optimum of all formulas.

    Bounds (each admissible: never below the IoU of any extension; the minimum of
    those that apply is used, the maximum over ``op2`` per prefix):

    * ``op2`` AND / AND NOT: ``N ⊆ Q``, so ``I(N) ≤ I(Q)`` and ``U(N) ≥ A``:
      ``IoU ≤ I(Q) / A``.
    * ``op2`` OR: ``N = Q ∪ L``: ``I(N) = I(Q) + |L ∧ A ∖ Q|`` and ``U(N) ≥ U(Q)``, so
      ``IoU ≤ (I(Q) + g) / U(Q)`` with ``g = min(A − I(Q), max_L |L ∧ A|)``, and for
      ``op1`` OR also ``≤ min_{Z = X, Y} max_L |L ∧ A ∖ Z|`` (``A ∖ Q ⊆ A ∖ Z``);
      and, as ``N ⊇ L`` adds at most ``I(Q)`` true pixels to ``L``:
      ``IoU ≤ IoU(L) + I(Q) / U(L) ≤ max_L IoU(L) + I(Q) / A``.
    * anchors, with ``b(Z, op2) = max_L IoU(Z op2 L)`` (known exactly): if
      ``Q ⊇ Z`` (``op1`` OR, ``Z = X, Y``) with ``e = I(Q) − I(Z)``: ``Q op2 L`` is
      ``Z op2 L`` plus at most ``e`` true pixels, with no fewer false ones, so
      ``IoU ≤ b(Z, op2) + e / U(Z op2 L)``, with ``U ≥ A`` (and ``≥ A + FP(Z)`` for
      OR). If ``Q ⊆ Z`` (``op1`` AND: ``Z = X, Y``; AND NOT: ``Z = X``) with
      ``d = FP(Z) − FP(Q)``: ``Z op2 L`` minus ``Q op2 L`` lies in ``Z ∖ Q``, so
      ``I`` is at most ``I(Z op2 L)`` and ``FP`` at least ``FP(Z op2 L) − d``; as
      ``A (A + F) ≤ (A + d)(A + max(0, F − d))`` for all ``F, d ≥ 0``:
      ``IoU ≤ b(Z, op2) · (1 + d / A)``.

    Dominated prefixes are pruned whatever their bound, as each of their
    extensions is matched by an earlier formula (in the order above) with at
    least its intersection and at most its false positives, hence at least its
    score: ``Q ⊇ Z`` with ``e = 0`` or ``Q ⊆ Z`` with ``d = 0`` (by ``Z op2 L``,
    whose mask differs only in false, resp. true, pixels; equal masks
    included); ``I(Q) = 0`` (by ``L``, or IoU 0); ``Y op1 X`` for ``op1`` OR /
    AND and ``X < Y`` (by ``X op1 Y``'s extensions: the same masks).

    An expansion needs ``|Q ∧ L|`` and ``|Q ∧ L ∧ A|`` for every ``L``: from the
    pair counts and ``|X ∧ Y ∧ L|`` (one sparse product over the signatures that
    hold ``X``, per group), so an expanded prefix costs ``O(K)`` after its group's
    product, not ``O(nnz(P))``.

    Memory: the index's pair counts, ``8 K²`` bytes (kept); per call about
    ``10 · 8 · 3 K²`` bytes at the peak for the length-2 statistics and bounds
    (K = 932: 201 MiB measured; K = 1,200: about 0.35 GB), the group's triple
    counts ``2 · 8 · K ·`` its prefixes, and ``chunk`` int64 elements per array
    of an expansion (a few arrays). The exhaustive method: ``S · K`` bytes,
    a few ``8 · S ·`` its batch, and ``8 · 3 K³`` bytes kept by the index (if at most 32 MiB).
    """
    if not 1 <= max_length <= 3:
        raise ValueError(f"max_length={max_length}: optimal() searches formulas of 1 to 3 concepts.")
    if method not in ("auto", "exhaustive", "bound"):
        raise ValueError(f"method={method!r}: use 'auto', 'exhaustive' or 'bound'.")
    pixels = np.asarray(pixels, np.int64)
    a = index.unit_counts(pixels)
    A = int(a.sum())
    present = index.pair_counts()[0]
    K = len(present)
    prefixes = 3 * K * K if max_length == 3 else 0
    if method == "auto":
        method = "exhaustive" if prefixes <= EXHAUSTIVE_PREFIXES else "bound"
    empty = Optimum(None, 0.0, None, 0.0, [0.0] * max_length, A, [None] * max_length, method, prefixes, 0,
                    prefixes, 0.0)
    if A == 0 or K == 0:
        return empty
    if method == "exhaustive":
        bests, expanded, seed_iou = _exhaustive(index, a, present, max_length, chunk), prefixes, 0.0
    else:
        pairs = _Pairs(index, a)
        bests = list(pairs.best_up_to_2())[:max_length]
        expanded, seed_iou = 0, 0.0
        if max_length == 3:
            best = bests[-1].copy()
            if lower is None and beam > 0:
                lower = search(index, pixels, beam=beam, max_length=max_length)
            seed = lower.formula if isinstance(lower, Explanation) else lower
            if seed is not None and len(seed) <= max_length and (key := _key(seed, present)) is not None:
                inter, union = _exact_counts(index, a, seed)
                seed_iou = _exact(inter, union)
                best.offer(float(reference_score(inter, union)), key, inter, union)
            bound = pairs.bounds()
            group = bound.max(axis=(1, 2))
            per_row = max(1, chunk // (3 * K))
            for X in np.argsort(-group, kind="stable"):
                floor = best.iou * (1 - SLACK)
                if not group[X] >= floor:
                    break
                work = [(o1, np.flatnonzero(bound[X, o1] >= floor)) for o1 in range(3)]
                work = [(o1, ys) for o1, ys in work if len(ys)]
                expanded += sum(len(ys) for _, ys in work)
                pairs.extensions(index, int(X), work, best, per_row)
            bests.append(best)
    if bests[0].score <= 0:
        return empty
    for k in range(1, len(bests)):  # at most k + 1 concepts: also every shorter formula
        bests[k].take(bests[k - 1])
    forms = [b.formula(present) for b in bests]
    return Optimum(forms[-1], bests[-1].iou, forms[0], bests[0].iou, [b.iou for b in bests], A, forms, method,
                   prefixes, expanded, prefixes - expanded, seed_iou)


def _exhaustive(index: ConceptIndex, a, present, max_length: int, chunk: int) -> list:
    """The best of length 1, 2, 3 (each of exactly that length), every extension of every prefix scored.

    The signature products of :func:`candidate_counts`, prefixes in batches:
    ``|F ∧ L|`` (``Pᵀ (n · F)``, unit-independent, kept by the index when it holds
    at most 2^22 numbers) and ``|F ∧ A ∧ L|`` (``Pᵀ (a · F)`` over the signatures
    the unit touches).
    """
    A, K = int(a.sum()), len(present)
    P = index.member_t[present]  # (K, S)
    touched = np.flatnonzero(a)
    Pa, wa = P[:, touched], a[touched, None]
    L, AL = index.concept_pixels[present], P @ a
    one = _Best()
    _offer_array(one, reference_score(AL, L + A - AL), AL, L + A - AL, lambda t: (1, int(t[0])))
    out = [one]
    batch = max(1, chunk // (4 * len(index.count)))
    column = np.stack([index.column(c) for c in present], axis=1)  # (S, K): the concepts' signature sets
    layers = [np.arange(K)[:, None]]
    if max_length >= 3:  # X op Y in enumeration order: per X, per Y, per op
        layers.append(np.stack(np.meshgrid(np.arange(K), np.arange(K), np.arange(3), indexing="ij"), -1).reshape(-1, 3))
    for prefixes in layers[:max_length - 1]:
        best = _Best()
        keep = len(prefixes) * K <= 1 << 22
        cached = index._prefix_pixels.get((prefixes.shape[1], K, batch)) if keep else None
        made = []
        for j, s in enumerate(range(0, len(prefixes), batch)):
            part = prefixes[s:s + batch]
            inside = column[:, part[:, 0]]
            if part.shape[1] > 1:  # X op Y, as Formula.evaluate
                other, op = column[:, part[:, 1]], part[:, 2]
                inside = np.where(op == 0, inside | other, np.where(op == 1, inside & other, inside & ~other))
            if cached is None:
                f = index.count[:, None] * inside
                FL, sF = (P @ f).T, f.sum(0)  # (b, K): |F ∧ L|; (b,): |F|
                made.append((FL, sF))
            else:
                FL, sF = cached[j]
            fa = wa * inside[touched]
            FAL, sFA = (Pa @ fa).T, fa.sum(0)
            inter = np.stack([sFA[:, None] + AL[None] - FAL, FAL, sFA[:, None] - FAL], axis=-1)  # (b, K, op)
            mask = np.stack([sF[:, None] + L[None] - FL, FL, sF[:, None] - FL], axis=-1)
            union = mask + A - inter
            _offer_array(best, reference_score(inter, union), inter, union,
                         lambda t, part=part: (part.shape[1] + 1, *map(int, part[t[0]]), int(t[1]), int(t[2])))
        if keep and cached is None:
            index._prefix_pixels[(prefixes.shape[1], K, batch)] = made
        out.append(best)
    return out
