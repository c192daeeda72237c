"""The bounds of the certified search: the best formulas found so far, and the pair and triple counts
from which every formula over a prefix is scored at once (:func:`helpers.explain.optimal`)."""
from __future__ import annotations
import numpy as np
import scipy.sparse as sp
from .beam import _exact, reference_score
from .formula import OPS, Formula
from .index import ConceptIndex


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
