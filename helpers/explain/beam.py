"""The reference's beam search over formulas (Mu & Andreas 2020), scored in counts on the concept index.

1. formulas grow left-deep, ``F OR L``, ``F AND L``, ``F AND NOT L``, in a beam
   of 5 started from the best primitives with IoU > 0, ``max_length − 1``
   expansions, each combining every beam formula with every concept of the
   probe set (``candidates="all"``, the reference's), shorter formulas kept
   (:func:`search`); ``candidates="firing"`` (only the concepts present in an
   image where the unit fires) is a weaker option, faster only where every
   candidate costs a mask;
2. ranking by the reference's value ``I / (U + 1e-10)`` in float64 with stable
   sorts (:func:`reference_score`: of two exactly tied formulas the larger
   union first), IoUs reported exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .formula import OPS, Formula
from .index import ConceptIndex

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
