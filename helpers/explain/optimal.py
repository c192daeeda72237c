"""The certified optimum: the best formula of up to 3 concepts among all of them.

:func:`optimal` finds the best formula of up to 3 concepts among all of them,
not only those a beam reaches, and proves it: exhaustively for few concepts, by
branch and bound with admissible IoU bounds for many (Broden's ~1,200).

:func:`optimal` adds the pair counts ``|X ∧ L|`` of all concepts (``Pᵀ diag(n) P``,
once per index), from which every formula of length 2 is scored at once, and
per expanded prefix group the triple counts ``|X ∧ Y ∧ L|`` (:mod:`.bounds`).
"""
from __future__ import annotations
from dataclasses import dataclass
import numpy as np
from .beam import Explanation, _exact, reference_score, search
from .formula import OPS, Formula
from .index import ConceptIndex
from .bounds import SLACK, _Best, _offer_array, _Pairs


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


# -- the certified optimum ------------------------------------------------------------------------------
EXHAUSTIVE_PREFIXES = 5000
"""``optimal(method="auto")`` scores every extension when there are at most this many length-2 prefixes (``3 K²``)."""


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
