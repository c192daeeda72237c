"""Compositional explanations: the signature index of ``helpers.explain`` vs one mask per candidate.

    python bench/compositional.py                       # 2,000 images, 112x112, 300 concepts, 64 units
    python bench/compositional.py --images 300 --units 8 --ref-units 1   # a quick run
    python bench/compositional.py --max-gb 8            # hold more of the reference's concept masks
    python bench/compositional.py --images 2000 --concepts 1200 --units 32 --ref-units 0   # Broden-sized concepts
    python bench/compositional.py --images 2000 --concepts 28 --size 28 --units 32         # Fashion-sized

The probe set is synthetic and seeded: per image an object layer (a
background "stuff" region and a few rectangles and ellipses), a part layer
(small rectangles inside some objects, drawn from the object's own parts) and a
colour layer (a background colour, blobs, and the colour of some objects), with
Zipf-like concept frequencies, plus one scene label and sometimes a texture
label per image (image-level, as Broden's). Each unit is a low-resolution map
per image (7x7 by default): a soft formula of one to three concepts (``max`` for
OR, product for AND, ``1 - x`` for NOT) over the concepts' area fractions in
each cell, plus Gaussian noise and a weak distractor concept, so that most units
have a clear but imperfect explanation, often of length 2 or 3.

Both methods get the same unit masks (``explain.threshold`` at the top 0.5 %, then
``explain.unit_pixels``: bilinear upsampling, half-pixel centres), timed once as the
shared "threshold + mask" phase. Then:

* fast path: ``ConceptIndex.build`` once, ``explain.search(...)`` per unit with
  the default ``candidates="all"`` (the reference's); the ``"firing"`` option
  (only the concepts present where the unit fires) is timed too, with how often
  it gives a lower IoU;
* certified optimum: ``explain.optimal(...)`` per unit (``--optimal-units``), seeded
  with the beam's answer; exhaustive or branch and bound as it chooses, with the
  prefixes it expanded and pruned and how often (and by how much) it beats the
  beam;
* reference approach: the procedure of the reference code (Mu & Andreas'
  ``compute_best_iou``) with numpy boolean masks over every probe pixel: one
  dense mask per concept, built once from the label maps (the reference builds
  the same dense masks, then run-length-encodes them with pycocotools); for every
  candidate formula its mask (``|``, ``&``, ``& ~``), ``np.count_nonzero`` of it
  and of its intersection with the unit's mask, ranked by I / (|M| + |A| - I + 1e-10);
  the same candidates (primitives: the concepts present in an image where the
  unit fires; expansions: every concept of the probe set), beam and tie rules
  (stable sorts, old beam formulas before new ones). It is,
  if anything, generous to the reference: each beam formula's mask is built once
  per expansion (the reference rebuilds it for every candidate), results go to
  preallocated buffers, and ``& ~`` is one pass (``>`` on booleans).

Measured and extrapolated: the reference's dense masks would take
``images x H x W x concepts`` bytes (7.5 GB by default), so as many as fit in
``--max-gb`` are held (the concepts present in the most images first) and the
others are rebuilt from the label maps whenever the search reads them; that
rebuilding is timed apart and not counted in the reference's search time. The
reference runs (in full) on ``--ref-units`` units spread over the units; its
time for all units is its mean per-unit time times the number of units. The
fast path runs on every unit. Every unit the reference ran on must get the
identical formula and an IoU equal to 1e-12; the exit status is 1 otherwise.

The Broden-ADE projection scales, for the reference, its measured cost per
candidate mask and pixel by (pixels x candidates); for the fast path, its
measured per-unit costs by the number of images (threshold: values; mask: images
where the unit fires; search: mask pixels, signatures, nnz of the index), with
signatures per image, mask pixels per image and the fraction of firing images as
in this synthetic set, plus an upper bound that also scales by the number of
concepts.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from helpers import explain
from helpers.explain import OPS, ConceptIndex, Formula

ADE = dict(images=22_210, size=112, concepts=1_200, units=512, length=3, beam=5, hours=14, processes=8)
"""Broden-ADE as probed by the reference code, and the time it reported (about 14 h with 8 processes)."""

QUANTILE = 0.005


# -- the synthetic probe set ----------------------------------------------------------------------------
def categories(n_concepts: int) -> dict:
    """Concept numbers per category (0 = no concept): object, part, colour pixel-level; scene, texture image-level."""
    n = n_concepts - 1
    color = min(11, max(1, n // 10))
    sizes = {"object": int(0.45 * n), "part": int(0.2 * n), "color": color, "scene": int(0.2 * n)}
    sizes["texture"] = n - sum(sizes.values())
    if min(sizes.values()) < 1:
        raise SystemExit(f"--concepts {n_concepts}: too few for five categories (use 20 or more).")
    out, lo = {}, 1
    for name, k in sizes.items():
        out[name] = np.arange(lo, lo + k)
        lo += k
    return out


class Zipf:
    """Draws from ``numbers`` with probability proportional to ``1 / (rank + 1) ** s``."""

    def __init__(self, numbers, s: float = 1.1):
        self.numbers = np.asarray(numbers)
        p = 1.0 / np.arange(1, len(self.numbers) + 1) ** s
        self.cdf = np.cumsum(p / p.sum())

    def __call__(self, rng, size=None):
        r = np.searchsorted(self.cdf, rng.random(size), side="right")
        return self.numbers[np.minimum(r, len(self.numbers) - 1)]


class SyntheticProbe:
    """Segment-like label maps (images, 3 layers, H, W) and image-level labels: the ``Concepts`` interface."""

    def __init__(self, n: int, size: int, n_concepts: int, seed: int):
        rng = np.random.default_rng(seed)
        self.cats = cats = categories(n_concepts)
        self.names = ("",) + tuple(f"{k}{j}" for k, v in cats.items() for j in range(len(v)))
        self.mask_size = (size, size)
        H = W = size
        self.pixel = np.zeros((n, 3, H, W), np.int16)
        self.image = []
        obj, part, color = Zipf(cats["object"]), cats["part"], Zipf(cats["color"], 0.8)
        stuff = Zipf(cats["object"][:max(1, len(cats["object"]) // 10)], 0.8)  # wall, sky, floor...
        scene, texture = Zipf(cats["scene"]), Zipf(cats["texture"])
        part_rank = Zipf(np.arange(3), 1.0)
        yy, xx = np.ogrid[:H, :W]
        for i in range(n):
            o, p, c = self.pixel[i]
            bg = stuff(rng)
            o[:] = bg
            c[:] = color(rng)
            for _ in range(rng.integers(1, 4)):  # colour blobs
                self._shape(rng, c, color(rng), H, W, yy, xx, (size // 6, size // 2))
            for _ in range(rng.integers(2, 7)):  # objects; some with their own colour and parts
                k = obj(rng)
                region, m = self._shape(rng, o, k, H, W, yy, xx, (size // 10, size // 2))
                if rng.random() < 0.5:
                    c[region][m] = cats["color"][(k * 7) % len(cats["color"])] if rng.random() < 0.7 \
                        else color(rng)
                if rng.random() < 0.6:
                    (y0, y1), (x0, x1) = [(s.start, s.stop) for s in region]
                    for _ in range(rng.integers(1, 4)):
                        h, w = rng.integers(2, max(3, (y1 - y0) // 2 + 1)), rng.integers(2, max(3, (x1 - x0) // 2 + 1))
                        y, x = rng.integers(y0, max(y0 + 1, y1 - h + 1)), rng.integers(x0, max(x0 + 1, x1 - w + 1))
                        p[y:y + h, x:x + w] = part[(3 * k + part_rank(rng)) % len(part)]
            labels = [cats["scene"][(3 * bg + rng.integers(0, 2)) % len(cats["scene"])] if rng.random() < 0.5
                      else scene(rng)]
            if rng.random() < 0.5:
                labels.append(texture(rng))
            self.image.append(np.array(labels, np.int32))

    @staticmethod
    def _shape(rng, layer, k, H, W, yy, xx, extent):
        """Paint a rectangle or an ellipse of concept ``k`` on ``layer``; return its box and mask."""
        h, w = rng.integers(*extent, size=2)
        y, x = rng.integers(-h // 3, H - 2 * h // 3), rng.integers(-w // 3, W - 2 * w // 3)
        region = (slice(max(y, 0), min(y + h, H)), slice(max(x, 0), min(x + w, W)))
        if rng.random() < 0.5:
            m = np.ones((region[0].stop - region[0].start, region[1].stop - region[1].start), bool)
        else:
            cy, cx = y + h / 2, x + w / 2
            m = ((yy[region[0]] + 0.5 - cy) / (h / 2)) ** 2 + ((xx[:, region[1]] + 0.5 - cx) / (w / 2)) ** 2 <= 1
        layer[region][m] = k
        return region, m

    def __len__(self):
        return len(self.pixel)

    def labels(self, i):
        return self.pixel[i].astype(np.int32), self.image[i]

    def describe(self, i):
        return f"synthetic image {i}"

    def fractions(self, low: int, chunk: int = 100) -> np.ndarray:
        """Area fraction of every concept in every low-resolution cell, float32 (images, concepts, low * low)."""
        n, (H, W), C = len(self), self.mask_size, len(self.names)
        cell = ((np.arange(H) * low // H)[:, None] * low + (np.arange(W) * low // W)[None, :]).ravel()
        per_cell = np.bincount(cell, minlength=low * low).astype(np.float32)
        out = np.zeros((n, C, low * low), np.float32)
        for s in range(0, n, chunk):
            lab = self.pixel[s:s + chunk].astype(np.int64).reshape(-1, 3, H * W)
            img = np.arange(len(lab))[:, None, None]
            key = (img * C + lab) * (low * low) + cell[None, None, :]
            counts = np.bincount(key.ravel(), minlength=len(lab) * C * low * low)
            out[s:s + len(lab)] = counts.reshape(len(lab), C, low * low) / per_cell
        out[:, 0] = 0
        np.minimum(out, 1, out=out)  # a concept in two layers at one pixel counts once (a bound)
        for i, labels in enumerate(self.image):
            out[i, labels] = 1
        return out


def make_units(probe: SyntheticProbe, n_units: int, low: int, seed: int):
    """Low-resolution unit maps (units, images, low, low) and each unit's planted soft formula (as text)."""
    rng = np.random.default_rng(seed + 1)
    frac = probe.fractions(low)
    n, C = frac.shape[:2]
    area = frac.sum((0, 2))
    pixel_level = np.concatenate([probe.cats[k] for k in ("object", "part", "color")])
    target = 3 * QUANTILE * n * low * low  # concepts not much larger than a unit's mask (so IoUs can be high)
    fit = np.minimum(area, target) / np.maximum(np.maximum(area, target), 1e-9)
    weight = np.zeros(C)
    weight[pixel_level] = fit[pixel_level]
    weight[probe.cats["scene"]] = 0.2 * fit[probe.cats["scene"]]
    weight /= weight.sum()
    templates = ["A", "A OR B", "A AND B", "A AND NOT B", "(A OR B) AND NOT C", "(A AND B) OR C",
                 "(A OR B) AND C"]
    maps = np.empty((n_units, n, low, low), np.float32)
    planted = []
    for u in range(n_units):
        t = templates[rng.choice(len(templates), p=[.15, .15, .2, .15, .15, .1, .1])]
        a = rng.choice(C, p=weight)
        fa = frac[:, a]
        overlap = np.einsum("nk,nck->c", fa, frac)
        overlap[[0, a]] = 0
        partner = overlap / overlap.sum() if overlap.sum() > 0 else weight
        picks = [a]
        if t == "A":
            signal = fa
        elif t == "A OR B":
            picks.append(rng.choice(C, p=weight))
            signal = np.maximum(fa, frac[:, picks[1]])
        elif t in ("A AND B", "A AND NOT B"):
            picks.append(rng.choice(C, p=partner))
            fb = frac[:, picks[1]]
            signal = np.sqrt(fa * fb) if t == "A AND B" else fa * (1 - fb)
        elif t == "(A OR B) AND NOT C":
            picks += [rng.choice(C, p=weight), rng.choice(C, p=partner)]
            signal = np.maximum(fa, frac[:, picks[1]]) * (1 - frac[:, picks[2]])
        elif t == "(A AND B) OR C":
            picks += [rng.choice(C, p=partner), rng.choice(C, p=weight)]
            signal = np.maximum(np.sqrt(fa * frac[:, picks[1]]), frac[:, picks[2]])
        else:  # (A OR B) AND C
            picks += [rng.choice(C, p=weight), rng.choice(C, p=partner)]
            signal = np.sqrt(np.maximum(fa, frac[:, picks[1]]) * frac[:, picks[2]])
        noise = rng.uniform(0.05, 0.25) * rng.standard_normal(signal.shape) + 0.3 * frac[:, rng.choice(C, p=weight)]
        maps[u] = (signal + noise).reshape(n, low, low)
        text = t.replace("A", "{0}", 1).replace("B", "{1}").replace("C", "{2}")  # "A" of "AND" stays
        planted.append(text.format(*(probe.names[c] for c in picks)))
    return maps, planted


# -- the reference approach -----------------------------------------------------------------------------
class DenseMasks:
    """One dense boolean mask over every probe pixel per concept, as many held as fit in ``max_gb``.

    The others are rebuilt into a scratch buffer when read; ``rebuild_s``
    accumulates that time so that the search can leave it out.
    """

    def __init__(self, probe: SyntheticProbe, max_gb: float):
        n, (H, W), C = len(probe), probe.mask_size, len(probe.names)
        self.probe, self.shape = probe, (n, H, W)
        self.present = np.zeros((n, C), bool)  # the reference's img2label
        for i in range(n):
            self.present[i, np.unique(probe.pixel[i])] = True
            self.present[i, probe.image[i]] = True
        self.present[:, 0] = False
        self.pixels = n * H * W
        self.scratch = np.empty(self.pixels, bool)
        self.area = np.zeros(C, np.int64)
        images = self.present.sum(0)
        order = [c for c in np.argsort(-images, kind="stable") if images[c] > 0]
        self.n_fit = int(max_gb * 2 ** 30 // self.pixels)
        self.held = {}
        for c in order[:self.n_fit]:
            self.held[c] = self._build(c, np.empty(self.pixels, bool))
            self.area[c] = np.count_nonzero(self.held[c])
        for c in order[self.n_fit:]:
            self.area[c] = np.count_nonzero(self._build(c, self.scratch))
        self.rebuild_s, self.rebuilds = 0.0, 0

    def _build(self, c, out):
        out[:] = False
        v = out.reshape(self.shape)
        for i in np.flatnonzero(self.present[:, c]):
            if c in self.probe.image[i]:
                v[i] = True
            else:
                np.any(self.probe.pixel[i] == c, axis=0, out=v[i])
        return out

    def get(self, c, copy=False):
        """Concept ``c``'s mask (a held one, or rebuilt: in the scratch buffer, or a fresh copy)."""
        if c in self.held:
            return self.held[c].copy() if copy else self.held[c]
        t = time.perf_counter()
        out = self._build(c, np.empty(self.pixels, bool) if copy else self.scratch)
        self.rebuild_s += time.perf_counter() - t
        self.rebuilds += 1
        return out

    @property
    def held_gb(self):
        return len(self.held) * self.pixels / 2 ** 30


def reference_search(store: DenseMasks, unit: np.ndarray, beam: int, max_length: int, candidates: str = "all"):
    """The reference's beam search, one mask per candidate: (formula, IoU, by_length, candidate masks).

    Ranked by ``I / (U + 1e-10)`` as the reference; the IoUs returned are exact.
    """
    A = int(np.count_nonzero(unit))
    n = store.shape[0]
    firing = unit.reshape(n, -1).any(1)
    pos = np.flatnonzero(store.present[firing].any(0))  # concepts in some image where the unit fires
    allowed = pos if candidates == "firing" else np.flatnonzero(store.area > 0)  # or every concept present
    buf, both = np.empty_like(unit), np.empty_like(unit)

    def score(m, M):
        inter = np.count_nonzero(np.logical_and(m, unit, out=both))
        union = M + A - inter
        return inter / (union + 1e-10), inter / union if union else 0.0

    prim = [(*score(store.get(c), int(store.area[c])), Formula(int(c))) for c in pos]
    n_masks = len(prim)
    kept = sorted((t for t in prim if t[0] > 0), key=lambda t: -t[0])[:beam]
    if not kept:
        return None, 0.0, [0.0] * max_length, n_masks
    by_length = [kept[0][1]]
    for _ in range(max_length - 1):
        inside = [f.evaluate(lambda c: store.get(c, copy=True)) for _, _, f in kept]
        scores = np.zeros((len(kept), len(allowed), len(OPS), 2))
        for j, c in enumerate(allowed):  # concept outermost: each concept's mask read once per expansion
            L = store.get(c)
            for b, fm in enumerate(inside):
                for o, op in enumerate(OPS):
                    if op == "OR":
                        np.logical_or(fm, L, out=buf)
                    elif op == "AND":
                        np.logical_and(fm, L, out=buf)
                    else:
                        np.greater(fm, L, out=buf)  # fm & ~L
                    scores[b, j, o] = score(buf, int(np.count_nonzero(buf)))
        n_masks += scores[..., 0].size
        new = [(*scores[b, j, o], f.then(op, allowed[j]))  # enumeration order: beam, concept, op
               for b, (_, _, f) in enumerate(kept) for j in range(len(allowed)) for o, op in enumerate(OPS)]
        kept = sorted(kept + new, key=lambda t: -t[0])[:beam]
        by_length.append(kept[0][1])
    return kept[0][2], kept[0][1], by_length, n_masks


# -- helpers --------------------------------------------------------------------------------------------
def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 30


def reset_peak() -> bool:
    """Reset the peak resident set size (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_gb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def fmt_s(s: float) -> str:
    if s < 1:
        return f"{s * 1e3:8.1f} ms"
    if s < 3600 * 2:
        return f"{s:8.1f} s "
    return f"{s / 3600:8.1f} h "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=112, help="mask size (square)")
    parser.add_argument("--map-size", type=int, default=7, help="the units' map size (square)")
    parser.add_argument("--concepts", type=int, default=300, help="concept numbers, 0 (no concept) included")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--ref-units", type=int, default=2, help="units the reference approach runs on")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length", type=int, default=3, help="maximum formula length")
    parser.add_argument("--max-gb", type=float, default=3.0, help="memory for the reference's dense masks")
    parser.add_argument("--optimal-units", type=int, default=None,
                        help="units the certified optimum (explain.optimal) runs on (default: all; 0: none)")
    parser.add_argument("--optimal-method", default="auto", choices=("auto", "exhaustive", "bound"),
                        help="explain.optimal's method (auto: exhaustive for few concepts, else branch and bound)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    N, H = args.images, args.size
    W, HW, B, LEN = H, H * H, args.beam, args.length

    t = time.perf_counter()
    probe = SyntheticProbe(N, H, args.concepts, args.seed)
    maps, planted = make_units(probe, args.units, args.map_size, args.seed)
    t_gen = time.perf_counter() - t
    C = len(probe.names)
    cats = ", ".join(f"{k} {len(v)}" for k, v in probe.cats.items())
    print(f"synthetic probe set (seed {args.seed}, generated in {t_gen:.1f} s): {N:,} images, {H}x{W} masks "
          f"({N * HW / 1e6:.1f} M pixels), {C - 1} concepts ({cats}; scene and texture image-level), "
          f"{args.units} units ({args.map_size}x{args.map_size} maps), top {QUANTILE:.1%}, beam {B}, "
          f"max length {LEN}")

    # -- fast path: every unit
    rss_before, peak_ok = rss_gb(), reset_peak()
    t = time.perf_counter()
    index = ConceptIndex.build(probe, desc="concept index")
    t_index = time.perf_counter() - t
    t_mask, t_search, pixels, expl = [], [], [], []
    for u in range(args.units):
        t = time.perf_counter()
        thr = explain.threshold(maps[u], QUANTILE)
        px = explain.unit_pixels(maps[u], thr, (H, W))
        t_mask.append(time.perf_counter() - t)
        t = time.perf_counter()
        expl.append(explain.search(index, px, beam=B, max_length=LEN))
        t_search.append(time.perf_counter() - t)
        pixels.append(px)
    peak = peak_gb()
    t_firing, firing = [], []
    for u in range(args.units):
        t = time.perf_counter()
        firing.append(explain.search(index, pixels[u], beam=B, max_length=LEN, candidates="firing"))
        t_firing.append(time.perf_counter() - t)
    t_firing, firing_iou = np.array(t_firing), np.array([e.iou for e in firing])
    t_mask, t_search = np.array(t_mask), np.array(t_search)
    S, nnz = len(index.count), index.member.nnz
    index_gb = (index.sig.nbytes + index.count.nbytes + 2 * (index.member.data.nbytes + index.member.indices.nbytes)
                ) / 2 ** 30
    ious = np.array([e.iou for e in expl])
    lengths = np.bincount([len(e.formula) if e.formula else 0 for e in expl], minlength=LEN + 1)
    firing_images = np.array([len(np.unique(px // HW)) for px in pixels])
    mask_px = np.array([len(px) for px in pixels])
    print(f"explanations (fast path, all units): IoU mean {ious.mean():.3f}, median {np.median(ious):.3f}, "
          f"> 0.1 for {np.sum(ious > 0.1)}/{len(ious)}; best formula length "
          + " / ".join(f"{k}: {lengths[k]}" for k in range(1, LEN + 1))
          + (f"; none: {lengths[0]}" if lengths[0] else ""))
    print(f"unit masks: {mask_px.mean():,.0f} pixels, {firing_images.mean():,.0f} firing images (means)")

    print("\nfast path (helpers.explain), measured on every unit")
    print(f"  concept index build (once)          {fmt_s(t_index)}   {S:,} signatures ({S / N:.1f} per image), "
          f"nnz(P) {nnz:,}, {index_gb * 1024:,.0f} MB")
    print(f"  per unit: threshold + mask (shared) {fmt_s(t_mask.mean())}   mean of {args.units}")
    print(f"  per unit: search                    {fmt_s(t_search.mean())}   mean of {args.units} "
          f"(min {t_search.min() * 1e3:.1f} ms, max {t_search.max() * 1e3:.1f} ms), candidates=\"all\"")
    lower = ious - firing_iou > 1e-12
    print(f"  per unit: search, candidates=firing {fmt_s(t_firing.mean())}   mean of {args.units} "
          f"({t_search.mean() / t_firing.mean():.2f}x the speed of 'all'); lower IoU on "
          f"{lower.sum()}/{args.units} units"
          + (f" (by {np.mean((ious - firing_iou)[lower]):.4f} on average)" if lower.any() else ""))
    fast_units = t_mask.sum() + t_search.sum()
    print(f"  all {args.units} units: mask + search        {fmt_s(fast_units)}")
    print(f"  index + all units                   {fmt_s(t_index + fast_units)}")
    what = "peak RSS (reset before the index)" if peak_ok else "peak RSS of the process"
    print(f"  memory: {what} {peak:.2f} GB, of which {rss_before:.2f} GB held before it "
          f"(interpreter, libraries, label maps, unit maps): {max(peak - rss_before, 0):.2f} GB for the fast path")

    # -- certified optimum
    k_opt = args.units if args.optimal_units is None else max(0, min(args.optimal_units, args.units))
    opt_ids = np.unique(np.linspace(0, args.units - 1, k_opt).round().astype(int)) if k_opt else np.zeros(0, int)
    if len(opt_ids) and LEN <= 3:
        rss0, peak_ok = rss_gb(), reset_peak()
        t = time.perf_counter()
        K = len(index.pair_counts()[0])
        t_pairs = time.perf_counter() - t
        t_opt, opt = [], []
        for u in opt_ids:
            t = time.perf_counter()
            opt.append(explain.optimal(index, pixels[u], max_length=LEN, lower=expl[u], method=args.optimal_method))
            t_opt.append(time.perf_counter() - t)
        t_opt = np.array(t_opt)
        gain = np.array([o.iou - expl[u].iou for o, u in zip(opt, opt_ids)])
        methods = sorted({o.method for o in opt})
        print(f"\ncertified optimum (explain.optimal, {' / '.join(methods)}, seeded with the beam's answer), "
              f"{len(opt_ids)} of {args.units} units")
        print(f"  per unit: optimum                   {fmt_s(t_opt.mean())}   mean (min {fmt_s(t_opt.min()).strip()}, "
              f"max {fmt_s(t_opt.max()).strip()}, median {fmt_s(float(np.median(t_opt))).strip()}); beam search "
              f"{fmt_s(t_search[opt_ids].mean()).strip()} on the same units; beam + optimum "
              f"{fmt_s(t_search[opt_ids].mean() + t_opt.mean()).strip()}")
        print(f"  pair counts |X ∧ Y| of the {K:,} concepts present (once per index) {fmt_s(t_pairs).strip()}; "
              f"{'peak RSS' if peak_ok else 'peak RSS of the process'} {peak_gb():.2f} GB "
              f"({max(peak_gb() - rss0, 0):.2f} GB above the {rss0:.2f} GB before)")
        if opt[0].prefixes:
            exp = np.array([o.expanded for o in opt])
            print(f"  length-2 prefixes: {opt[0].prefixes:,} per unit; expanded {exp.mean():,.0f} on average "
                  f"(median {np.median(exp):,.0f}, max {exp.max():,}), pruned {np.mean([o.pruned for o in opt]):,.0f}")
        better = gain > 1e-12
        print(f"  the optimum beats the beam on {better.sum()}/{len(opt_ids)} units"
              + (f" (IoU +{gain[better].mean():.4f} on average, +{gain.max():.4f} at most; mean IoU "
                 f"{np.mean([o.iou for o in opt]):.4f} vs the beam's {ious[opt_ids].mean():.4f})"
                 if better.any() else "")
              + "; never below it" + ("" if gain.min() >= -1e-12 else " -- VIOLATED"))
        if gain.min() < -1e-12:
            sys.exit(1)

    # -- reference approach: a few units
    k = max(0, min(args.ref_units, args.units))
    ref_ids = np.unique(np.linspace(0, args.units - 1, k).round().astype(int)) if k else np.zeros(0, int)
    if len(ref_ids):
        t = time.perf_counter()
        store = DenseMasks(probe, args.max_gb)
        t_store = time.perf_counter() - t
        n_used = int(np.count_nonzero(store.area))
        print(f"\nreference approach (dense boolean masks, one per candidate), measured on {len(ref_ids)} of "
              f"{args.units} units: {', '.join(f'#{u}' for u in ref_ids)}")
        print(f"  concept masks: {len(store.held)} of {n_used} held dense ({store.held_gb:.2f} GB, --max-gb "
              f"{args.max_gb:g}), built with their areas in {t_store:.1f} s (not counted); "
              f"the other {n_used - len(store.held)} rebuilt on each read, not counted")
    else:
        print("\nreference approach: not run (--ref-units 0)")
    t_ref, n_masks, allowed_frac, agree, t_ref_firing, n_firing = [], [], [], 0, [], []
    for u in ref_ids:
        rebuild0 = store.rebuild_s
        t = time.perf_counter()
        unit = np.zeros(N * HW, bool)
        unit[pixels[u]] = True
        formula, iou, by_length, m = reference_search(store, unit, B, LEN, "all")
        t_ref.append(time.perf_counter() - t - (store.rebuild_s - rebuild0))
        n_masks.append(m)
        allowed_frac.append(np.count_nonzero(store.present[unit.reshape(N, -1).any(1)].any(0)) / n_used)  # primitives
        e = expl[u]
        same = formula == e.formula and abs(iou - e.iou) <= 1e-12
        agree += same
        name = formula.text(probe.names) if formula else "(none)"
        print(f"  unit #{u:<3d} search {fmt_s(t_ref[-1])} ({m:,} candidate masks; fast path "
              f"{t_search[u] * 1e3:.1f} ms, ratio {t_ref[-1] / t_search[u]:,.0f}x)  "
              f"{'same' if same else 'DIFFERENT'}: {name}, IoU {iou:.4f}"
              + ("" if same else f" vs fast {e.formula.text(probe.names) if e.formula else '(none)'}, "
                                 f"IoU {e.iou:.4f}")
              + f"  [planted: {planted[u]}]")
        rebuild0 = store.rebuild_s
        t = time.perf_counter()
        formula, iou, _, m = reference_search(store, unit, B, LEN, "firing")
        t_ref_firing.append(time.perf_counter() - t - (store.rebuild_s - rebuild0))
        n_firing.append(m)
        same = formula == firing[u].formula and abs(iou - firing[u].iou) <= 1e-12
        agree += same
        print(f"  unit #{u:<3d} candidates=firing: search {fmt_s(t_ref_firing[-1])} ({m:,} candidate masks; fast path "
              f"{t_firing[u] * 1e3:.1f} ms)  {'same' if same else 'DIFFERENT'}, IoU {iou:.4f}")
        del unit
    if len(ref_ids):
        t_ref, n_masks = np.array(t_ref), np.array(n_masks)
        per_mask = t_ref.sum() / n_masks.sum()
        ratio = t_ref.sum() / t_search[ref_ids].sum()
        print(f"  per unit: search                    {fmt_s(t_ref.mean())}   mean of {len(ref_ids)}; "
              f"{per_mask * 1e3:.2f} ms per candidate mask, {per_mask / (N * HW) * 1e9:.3f} ns per pixel "
              f"(rebuilding unheld masks, {store.rebuild_s:.1f} s in all, left out)")
        print(f"  all {args.units} units (extrapolated)     {fmt_s(t_ref.mean() * args.units)}   mean per unit x "
              f"{args.units}")
        print(f"  per unit: search, candidates=firing {fmt_s(np.mean(t_ref_firing))}   mean of {len(ref_ids)} "
              f"({np.mean(t_ref) / np.mean(t_ref_firing):.2f}x faster than 'all', "
              f"{np.sum(n_masks) / np.sum(n_firing):.2f}x fewer candidate masks)")
        print(f"\nagreement: {agree}/{2 * len(ref_ids)} searches (candidates all and firing) with the identical "
              f"formula and IoU within 1e-12")
        print(f"speed-up of the search, same units: {ratio:,.0f}x (target >= 100x); all units, "
              f"extrapolated reference vs fast path incl. shared masks and the index: "
              f"{(t_ref.mean() * args.units + t_mask.sum()) / (t_index + fast_units):,.0f}x")

    # -- projection: Broden-ADE
    a = ADE
    scale, cscale = a["images"] / N, a["concepts"] / (C - 1)
    print(f"\nprojection, Broden-ADE ({a['images']:,} images, {a['size']}x{a['size']} masks = "
          f"{a['images'] * a['size'] ** 2 / 1e6:,.1f} M pixels, {a['concepts']:,} concepts, {a['units']} units, "
          f"length {a['length']}, beam {a['beam']}), one process unless said:")
    if len(ref_ids):
        frac = float(np.mean(allowed_frac))
        cand = a["concepts"] * (frac + (a["length"] - 1) * a["beam"] * len(OPS))
        per_unit = per_mask / (N * HW) * a["images"] * a["size"] ** 2 * cand
        total = per_unit * a["units"] + t_mask.mean() * scale * a["units"]
        print(f"  reference approach: {cand:,.0f} candidate masks per unit (every concept in the expansions; "
              f"{frac:.0%} of them primitives, as here) x {a['images'] * a['size'] ** 2 / 1e6:,.0f} M pixels x "
              f"{per_mask / (N * HW) * 1e9:.3f} ns = {per_unit / 60:,.0f} min per unit; "
              f"{a['units']} units {total / 3600:,.0f} h, {total / 3600 / a['processes']:,.0f} h on "
              f"{a['processes']} processes (reported for the reference code, which keeps its masks "
              f"run-length-encoded: ~{a['hours']} h on {a['processes']} processes)")
    f_index, f_unit = t_index * scale, (t_mask.mean() + t_search.mean()) * scale
    print(f"  fast path, assuming signatures ({S / N:.1f} per image), nnz(P) ({nnz / N:.0f} per image), mask "
          f"pixels and firing images grow with the images as here (x{scale:.1f}): index build "
          f"{f_index / 60:.1f} min, {a['images'] * a['size'] ** 2 * 4 / 2 ** 30:.1f} GB of signature ids; "
          f"per unit {f_unit:.2f} s; {a['units']} units {f_unit * a['units'] / 60:.1f} min; in all "
          f"{(f_index + f_unit * a['units']) / 60:.1f} min (upper bound, per-unit costs also x{cscale:.1f} for "
          f"concepts: {(f_index + f_unit * cscale * a['units']) / 60:.1f} min)")
    if agree != 2 * len(ref_ids):
        sys.exit(1)


if __name__ == "__main__":
    main()
