"""Compositional explanations: the fast scorer against brute force, planted units, hand computations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from helpers import explain
from helpers.explain import bounds
from helpers.explain.beam import candidate_scores
from helpers.explain.formula import OPS, Formula
from helpers.explain.index import ConceptIndex


class Labels:
    """Concepts from arrays: pixel label maps (n, L, H, W) and image-level lists."""

    def __init__(self, pixel, image, n_concepts):
        self.pixel, self.image = pixel, image
        self.names = ("",) + tuple(f"c{i}" for i in range(1, n_concepts))
        self.mask_size = pixel.shape[2:]

    def __len__(self):
        return len(self.pixel)

    def labels(self, i):
        return self.pixel[i].astype(np.int32), np.asarray(self.image[i], np.int32)

    def describe(self, i):
        return f"image {i}"


def random_problem(seed, n=12, L=3, size=(6, 5), C=9, blobs=True):
    rng = np.random.default_rng(seed)
    if blobs:  # segment-like maps: a few rectangles per layer
        pixel = np.zeros((n, L, *size), np.int64)
        for i, l in itertools.product(range(n), range(L)):
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, size[0]), rng.integers(0, size[1])
                pixel[i, l, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = rng.integers(0, C)
    else:
        pixel = rng.integers(0, C, size=(n, L, *size)) * (rng.random((n, L, *size)) < 0.5)
    image = [rng.choice(np.arange(1, C), size=rng.integers(0, 3), replace=False) for _ in range(n)]
    return Labels(pixel, image, C)


def dense_masks(concepts):
    """(C, n, H, W) bool: the concept masks the reference holds, one per concept."""
    n, C = len(concepts), len(concepts.names)
    masks = np.zeros((C, n, *concepts.mask_size), bool)
    for i in range(n):
        pixel, image = concepts.labels(i)
        for c in range(1, C):
            masks[c, i] = (pixel == c).any(0) | (c in set(image.tolist()))
    return masks


def reference_score(i, u):
    """The reference's ranking value: I / (U + 1e-10) in float64 (Python floats are float64)."""
    return i / (u + 1e-10)


def brute_search(masks, unit, beam=5, max_length=3, candidates="all"):
    """The reference's procedure: one mask per candidate formula, counted with count_nonzero.

    Ranked by I / (U + 1e-10) with stable sorts (Python's sorted), candidates
    enumerated per beam formula, per concept, per op, old beam formulas before
    new; the reported IoU is exact.
    """
    C = len(masks)
    A = int(np.count_nonzero(unit))

    def score(m):
        i = np.count_nonzero(m & unit)
        u = np.count_nonzero(m) + A - i
        return reference_score(i, u), (i / u if u else 0.0)

    firing = unit.reshape(len(unit), -1).any(1)
    occurs = [c for c in range(1, C) if masks[c].any()]  # the reference's labels: concepts of the probe set
    allowed = [c for c in occurs if candidates == "all" or masks[c][firing].any()]
    prims = [(*score(masks[c]), Formula(c)) for c in allowed]
    kept = sorted((t for t in prims if t[0] > 0), key=lambda t: -t[0])[:beam]
    if not kept:
        return None, 0.0, []
    by_length = [kept[0][1]]
    for _ in range(max_length - 1):
        new = []
        for _, _, f in kept:
            fm = f.evaluate(lambda c: masks[c])
            for c in allowed:
                for op in OPS:
                    m = fm | masks[c] if op == "OR" else fm & masks[c] if op == "AND" else fm & ~masks[c]
                    new.append((*score(m), f.then(op, c)))
        kept = sorted(kept + new, key=lambda t: -t[0])[:beam]
        by_length.append(kept[0][1])
    return kept[0][2], kept[0][1], by_length


def brute_optimum(masks, unit, max_length=3):
    """The best of EVERY left-deep formula of at most ``max_length`` (<= 3) concepts, by dense masks.

    Ranked by I / (U + 1e-10), ties to the first in the order: shorter first, then
    per first concept, per step the concept then the op. Returns
    ``(formula, exact IoU, best exact IoU at each maximum length)``.
    """
    C, A = len(masks), int(np.count_nonzero(unit))
    M = masks[1:].reshape(C - 1, -1)  # every concept but 0, occurring or not
    u = unit.ravel()

    def extend(F):  # (..., P) -> (..., C - 1, 3, P): per concept, per op
        F, L = F[..., None, :], M
        return np.stack([F | L, F & L, F & ~L], axis=-2)

    layers = [M]
    for _ in range(max_length - 1):
        layers.append(extend(layers[-1]))
    best, by_length = (-1.0, None, 0.0), []
    for k, F in enumerate(layers):
        i = np.count_nonzero(F & u, axis=-1)
        union = np.count_nonzero(F, axis=-1) + A - i
        r = reference_score(i.astype(np.float64), union.astype(np.float64))
        t = int(np.argmax(r))  # the first maximum in enumeration order
        if r.flat[t] > best[0]:
            idx = np.unravel_index(t, r.shape)
            f = Formula(int(idx[0]) + 1)
            for s in range(k):
                f = f.then(OPS[idx[2 * s + 2]], int(idx[2 * s + 1]) + 1)
            best = (r.flat[t], f, i.flat[t] / union.flat[t])
        by_length.append(best[2] if best[0] > 0 else 0.0)
    return (best[1], best[2], by_length) if best[0] > 0 else (None, 0.0, by_length)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("candidates", ["firing", "all"])
def test_fast_search_equals_brute_force(seed, candidates):
    concepts = random_problem(seed, blobs=seed % 2 == 0)
    index = ConceptIndex.build(concepts, chunk=5)  # signatures shared across chunks
    masks = dense_masks(concepts)
    rng = np.random.default_rng(100 + seed)
    H, W = concepts.mask_size
    for trial in range(4):
        unit = rng.random((len(concepts), H, W)) < rng.uniform(0.05, 0.4)
        if trial == 0:  # a unit that is mostly one formula: long formulas win
            unit = Formula(2).then("OR", 3).then("AND NOT", 4).evaluate(lambda c: masks[c]) ^ (
                rng.random(unit.shape) < 0.03)
        if trial == 1:  # a unit silent in half the images: candidates="all" differs from "firing"
            unit[: len(unit) // 2] = False
        pixels = np.flatnonzero(unit.ravel())
        fast = explain.search(index, pixels, beam=5, max_length=4, candidates=candidates)
        formula, best, by_length = brute_search(masks, unit, beam=5, max_length=4, candidates=candidates)
        assert fast.formula == formula
        assert fast.iou == pytest.approx(best, abs=1e-12)
        np.testing.assert_allclose(fast.by_length, by_length, atol=1e-12)
        assert fast.unit_pixels == unit.sum()


def test_the_default_finds_and_not_a_concept_absent_where_the_unit_fires():
    """Unit = A in the images of the first half; the second half repeats them with A and a scene C.

    C never occurs where the unit fires, so ``candidates="firing"`` cannot use it;
    ``A AND NOT C`` is the unit exactly. Without C no formula reaches IoU 1: the
    two halves carry the same pixel labels, and the unit fires in one only.
    """
    rng = np.random.default_rng(7)
    n, (H, W), C = 6, (8, 8), 8  # concept 1 = A, 2 = C (image-level), 3..7 clutter
    pixel = np.zeros((n, 2, H, W), np.int64)
    for i in range(n // 2):
        pixel[i, 0, 1:6, 2:7] = 1  # A
        for _ in range(4):
            y, x = rng.integers(0, H - 2, size=2)
            pixel[i, 1, y:y + 3, x:x + 3] = rng.integers(3, C)
        pixel[i + n // 2] = pixel[i]
    image = [np.array([], np.int64)] * (n // 2) + [np.array([2])] * (n // 2)
    concepts = Labels(pixel, image, C)
    index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
    target = masks[1] & ~masks[2]
    pixels = np.flatnonzero(target.ravel())
    e = explain.search(index, pixels, beam=5, max_length=3)
    assert e.iou == 1.0
    np.testing.assert_array_equal(e.formula.evaluate(lambda c: masks[c]), target)
    assert e.at(2).formula == Formula(1).then("AND NOT", 2) and e.by_length[1] == 1.0
    firing = explain.search(index, pixels, beam=5, max_length=3, candidates="firing")
    assert firing.iou < 1.0 and 2 not in [c for _, c in firing.formula.steps]
    assert brute_search(masks, target.reshape(n, H, W), candidates="firing")[1] < 1.0
    assert explain.optimal(index, pixels).iou == 1.0


def one_row(layers, n_concepts):
    """Concepts on one image of one row: ``layers`` lists, per layer, {concept: pixel columns}."""
    width = 1 + max(max(cols) for layer in layers for cols in layer.values())
    pixel = np.zeros((1, len(layers), 1, width), np.int64)
    for k, layer in enumerate(layers):
        for c, cols in layer.items():
            pixel[0, k, 0, cols] = c
    return Labels(pixel, [np.array([], np.int64)], n_concepts)


def test_ties_go_to_the_larger_union():
    """Exactly tied IoUs: the reference's I / (U + 1e-10) ranks the larger union first, against concept order."""
    # primitives: unit = 0..3; c1 = {0}: I 1, U 4; c2 = {0, 1, 4..7}: I 2, U 8; both IoU 1/4
    concepts = one_row([{1: [0], 2: [1, 4, 5, 6, 7]}, {2: [0]}], 3)
    index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
    unit = np.zeros((1, 1, masks.shape[-1]), bool)
    unit[0, 0, :4] = True
    pixels = np.flatnonzero(unit.ravel())
    assert explain.iou([1, 2], [1, 6], 4).tolist() == [0.25, 0.25]
    for beam in (1, 5):
        e = explain.search(index, pixels, beam=beam, max_length=1)
        assert e.formula == e.primitive == Formula(2) and e.iou == 0.25
        assert brute_search(masks, unit, beam=beam, max_length=1)[0] == Formula(2)
    for method in ("exhaustive", "bound"):
        assert explain.optimal(index, pixels, max_length=1, method=method).formula == Formula(2)
    assert brute_optimum(masks, unit, max_length=1)[0] == Formula(2)
    # an expansion: unit = 0..3; c1 = {0..3, 8..15} (IoU 1/3) the beam; c1 AND c2 = {0, 1}: I 2, U 4;
    # c1 AND c3 = {0, 1, 2, 8, 9}: I 3, U 6; both IoU 1/2, c2 enumerated first
    concepts = one_row([{1: [0, 1, 2, 3, *range(8, 16)]}, {2: [0, 1, 16, 17, 18, 19]},
                        {3: [0, 1, 2, 8, 9, 16, 17, 18, 19]}], 4)
    index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
    unit = np.zeros((1, 1, masks.shape[-1]), bool)
    unit[0, 0, :4] = True
    pixels = np.flatnonzero(unit.ravel())
    expected = Formula(1).then("AND", 3)
    e = explain.search(index, pixels, beam=1, max_length=2)
    assert e.primitive == Formula(1) and e.formula == expected and e.iou == 0.5
    assert brute_search(masks, unit, beam=1, max_length=2)[0] == expected
    for method in ("exhaustive", "bound"):
        assert explain.optimal(index, pixels, max_length=2, method=method).formula == expected
    assert brute_optimum(masks, unit, max_length=2)[0] == expected


def test_the_optimum_equals_brute_force_over_every_formula():
    worse = 0
    for seed in range(16):
        concepts = random_problem(seed, n=8, size=(5, 5), C=8, blobs=seed % 2 == 0)
        index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
        rng = np.random.default_rng(200 + seed)
        unit = rng.random((len(concepts), *concepts.mask_size)) < rng.uniform(0.1, 0.4)
        if seed % 4 == 0:  # mostly a length-3 formula
            unit = Formula(1).then("AND NOT", 2).then("OR", 3).evaluate(lambda c: masks[c]) ^ (
                rng.random(unit.shape) < 0.05)
        pixels = np.flatnonzero(unit.ravel())
        formula, best, by_length = brute_optimum(masks, unit, max_length=3)
        beam = explain.search(index, pixels, beam=5, max_length=3)
        for method in ("exhaustive", "bound"):
            e = explain.optimal(index, pixels, max_length=3, method=method)
            assert e.method == method
            assert e.formula == formula, (seed, method)
            assert e.iou == pytest.approx(best, abs=1e-12)
            np.testing.assert_allclose(e.by_length, by_length, atol=1e-12)
            assert e.iou >= beam.iou - 1e-12
            assert e.expanded + e.pruned == e.prefixes == 3 * len(index.pair_counts()[0]) ** 2
            for k in (1, 2):
                assert e.at(k).formula == brute_optimum(masks, unit, max_length=k)[0]
        worse += beam.iou < best - 1e-12
    assert worse > 0  # the beam misses the optimum on some of these problems


@pytest.mark.parametrize("seed", range(6))
def test_branch_and_bound_equals_the_exhaustive_search(seed):
    concepts = random_problem(seed, n=24, L=4, size=(10, 10), C=26, blobs=True)
    index = ConceptIndex.build(concepts)
    masks = dense_masks(concepts)
    rng = np.random.default_rng(300 + seed)
    pruned = 0
    for trial in range(3):
        unit = rng.random((len(concepts), *concepts.mask_size)) < 0.15
        if trial:
            a, b, c = rng.choice(np.arange(1, 26), size=3, replace=False)
            op1, op2 = rng.choice(OPS, size=2)
            unit = Formula(a).then(op1, b).then(op2, c).evaluate(lambda k: masks[k]) ^ (rng.random(unit.shape) < 0.02)
        pixels = np.flatnonzero(unit.ravel())
        full = explain.optimal(index, pixels, method="exhaustive")
        bound = explain.optimal(index, pixels, method="bound")
        assert bound.formula == full.formula and bound.iou == full.iou and bound.by_length == full.by_length
        assert bound.formulas == full.formulas and bound.primitive == full.primitive
        assert bound.seed_iou <= bound.iou
        unseeded = explain.optimal(index, pixels, method="bound", beam=0)
        assert unseeded.formula == full.formula and unseeded.seed_iou == 0.0
        seeded = explain.optimal(index, pixels, method="bound", lower=full.formula)  # the optimum itself as the seed
        assert seeded.formula == full.formula and seeded.seed_iou == full.iou and seeded.expanded <= bound.expanded
        pruned += bound.pruned
    assert pruned > 0


def test_every_bound_is_at_least_the_best_extension():
    """The branch and bound's prefix bounds are admissible: never below an extension's exact IoU, unless dominated."""
    concepts = random_problem(5, n=16, L=4, size=(8, 8), C=14)
    index = ConceptIndex.build(concepts)
    present, _, _ = index.pair_counts()
    K = len(present)
    rng = np.random.default_rng(5)
    for trial in range(3):
        unit = rng.random((len(concepts), *concepts.mask_size)) < 0.2
        a = index.unit_counts(np.flatnonzero(unit.ravel()))
        pairs = bounds._Pairs(index, a)
        bound = pairs.bounds()
        prefixes = [Formula(int(present[x])).then(OPS[o], present[y]) for x in range(K) for o in range(3)
                    for y in range(K)]
        best = candidate_scores(index, a, prefixes)[:, :, present].max(axis=(1, 2)).reshape(K, 3, K)
        ok = np.isfinite(bound)
        assert np.all(bound[ok] >= best[ok] - 1e-12)
        assert ok.sum() < ok.size  # some prefixes are dominated
        # a dominated prefix's extensions never beat the best formula of length <= 2 (mirrors Y op X aside)
        _, two = pairs.best_up_to_2()
        mirror = np.zeros_like(ok)
        mirror[:, :2] = (np.arange(K)[:, None] > np.arange(K)[None, :])[:, None, :]
        assert np.all(best[~ok & ~mirror] <= two.iou + 1e-12)
        assert np.all(best[mirror] == best.transpose(2, 1, 0)[mirror])  # X op Y and Y op X: the same mask


def test_a_longer_search_holds_every_shorter_answer():
    concepts = random_problem(3)
    index = ConceptIndex.build(concepts)
    unit = np.random.default_rng(0).random((len(concepts), *concepts.mask_size)) < 0.2
    pixels = np.flatnonzero(unit)
    long = explain.search(index, pixels, max_length=5)
    for length in (1, 2, 3):
        short = explain.search(index, pixels, max_length=length)
        assert long.at(length).formula == short.formula and long.at(length).iou == short.iou
        assert long.at(length).by_length == short.by_length


@pytest.mark.parametrize("seed", range(4))
def test_every_candidate_score_equals_its_mask(seed):
    concepts = random_problem(seed, n=7, C=7)
    index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
    rng = np.random.default_rng(seed)
    unit = rng.random((len(concepts), *concepts.mask_size)) < 0.3
    beam = [Formula(1), Formula(2).then("OR", 5), Formula(3).then("AND NOT", 1).then("AND", 6)]
    scores = candidate_scores(index, index.unit_counts(np.flatnonzero(unit)), beam)
    assert scores.shape == (3, 3, 7)
    for b, f in enumerate(beam):
        fm = f.evaluate(lambda c: masks[c])
        for (o, op), c in itertools.product(enumerate(OPS), range(1, 7)):
            m = fm | masks[c] if op == "OR" else fm & masks[c] if op == "AND" else fm & ~masks[c]
            inter = np.count_nonzero(m & unit)
            expected = inter / (np.count_nonzero(m) + unit.sum() - inter)
            assert scores[b, o, c] == pytest.approx(expected, abs=1e-12), (f, op, c)


def test_signatures_count_a_concept_once_per_pixel():
    pixel = np.zeros((1, 3, 2, 2), np.int64)
    pixel[0, :, 0, 0] = [4, 4, 2]  # the same concept in two maps at one pixel
    concepts = Labels(pixel, [np.array([4, 3])], 5)  # and image-level too
    index = ConceptIndex.build(concepts)
    # concept 4 covers the whole image (image-level), 2 one pixel, 3 the whole image, 1 nothing
    np.testing.assert_array_equal(index.concept_pixels, [0, 0, 1, 4, 4])
    assert index.image_concepts.toarray().tolist() == [[False, False, True, True, True]]
    np.testing.assert_array_equal(index.count, np.bincount(index.sig))


def test_planted_formula_is_recovered():
    """A unit firing exactly on (A OR B) AND NOT C, plus sub-threshold noise, is explained by it."""
    rng = np.random.default_rng(0)
    n, L, (H, W), C = 40, 3, (16, 16), 12
    pixel = np.zeros((n, L, H, W), np.int64)
    for i, l in itertools.product(range(n), range(L)):
        for _ in range(3):
            y, x = rng.integers(0, H - 4, size=2)
            pixel[i, l, y:y + rng.integers(3, 9), x:x + rng.integers(3, 9)] = rng.integers(1, C)
    concepts = Labels(pixel, [[] for _ in range(n)], C)
    index, masks = ConceptIndex.build(concepts), dense_masks(concepts)
    planted = Formula(3).then("OR", 5).then("AND NOT", 7)
    target = planted.evaluate(lambda c: masks[c])
    maps = np.where(target, 2.0, 0.0) + rng.uniform(0, 0.9, size=target.shape)  # noise stays below 1
    pixels = np.flatnonzero((maps > 1.0).ravel())
    e = explain.search(index, pixels, beam=5, max_length=3)
    assert e.iou == 1.0
    np.testing.assert_array_equal(e.formula.evaluate(lambda c: masks[c]), target)
    assert e.formula.text(concepts.names) in ("(c3 OR c5) AND NOT c7", "(c5 OR c3) AND NOT c7")
    # a pure single concept is found at length 1
    single = explain.search(index, np.flatnonzero(masks[5].ravel()), beam=5, max_length=3)
    assert single.formula == Formula(5) and single.iou == 1.0 and single.iou_length1 == 1.0


def test_threshold_is_the_exact_upper_quantile():
    values = np.arange(1, 201, dtype=np.float32)  # 1 .. 200
    # position (200 - 1) * 0.995 = 198.005 -> 199 + 0.005 * (200 - 199)
    assert explain.threshold(values, 0.005) == pytest.approx(199.005)
    assert explain.threshold(values, 0.5) == pytest.approx(100.5)
    big = np.random.default_rng(0).standard_normal(20_000_001).astype(np.float32)  # torch.quantile refuses this
    assert explain.threshold(big, 0.005) == pytest.approx(float(np.quantile(big.astype(np.float64), 0.995)))
    with pytest.raises(ValueError, match="quantile"):
        explain.threshold(values, 1.5)


def test_upsampling_uses_half_pixel_centres():
    m = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    up = explain.upsample(m, (4, 4))[0].numpy()
    # output pixel centres at (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped to [0, 1]
    t = np.clip(np.array([-0.25, 0.25, 0.75, 1.25]), 0, 1)
    expected = 2 * t[:, None] + t[None, :]  # bilinear of 0, 1, 2, 3 is x + 2y
    np.testing.assert_allclose(up, expected, atol=1e-6)


def test_unit_pixels_match_a_dense_computation():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((30, 3, 4)).astype(np.float32)
    thr = explain.threshold(maps, 0.05)
    dense = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(9, 12), mode="bilinear",
                                            align_corners=False)[:, 0].numpy() > thr
    np.testing.assert_array_equal(explain.unit_pixels(maps, thr, (9, 12), chunk=7), np.flatnonzero(dense.ravel()))


def test_iou_by_hand():
    np.testing.assert_allclose(explain.iou([2, 0, 3], [4, 0, 3], 3), [2 / 5, 0.0, 1.0])


def test_formula_text_is_left_deep():
    names = ("", "water", "river", "blue")
    assert Formula(1).then("OR", 2).then("AND NOT", 3).text(names) == "(water OR river) AND NOT blue"
    assert len(Formula(1).then("AND", 3)) == 2


def test_search_refuses_bad_settings():
    index = ConceptIndex.build(random_problem(0))
    with pytest.raises(ValueError, match="candidates='some'"):
        explain.search(index, [0, 1], candidates="some")
    with pytest.raises(ValueError, match="beam=0"):
        explain.search(index, [0, 1], beam=0)
    with pytest.raises(ValueError, match="max_length=4"):
        explain.optimal(index, [0, 1], max_length=4)
    with pytest.raises(ValueError, match="method='beam'"):
        explain.optimal(index, [0, 1], method="beam")


def test_optimal_of_an_empty_or_unexplained_unit():
    pixel = np.zeros((2, 1, 3, 3), np.int64)
    pixel[0, 0, 0, 0] = 1
    index = ConceptIndex.build(Labels(pixel, [np.array([], np.int64)] * 2, 3))
    for pixels in ([], [9 + 4]):  # no pixel; a pixel no concept covers
        for method in ("exhaustive", "bound"):
            e = explain.optimal(index, pixels, method=method)
            assert e.formula is None and e.iou == 0.0 and e.by_length == [0.0] * 3 and e.formulas == [None] * 3
