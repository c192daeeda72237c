"""FAISS against scikit-learn's brute-force NearestNeighbors, k = 5, 1,000 queries.

    python bench/knn.py                # quick profile's largest index + 1,000,000 x 256 synthetic
    python bench/knn.py --n 200000     # smaller synthetic set

Data sets: (1) the quick profile's largest layer index (from 03_index; its
vectors reconstructed from the index), queried with 1,000 centred activations
of the same layer's sample (01); (2) 1,000,000 x 256 synthetic float32 vectors
from a mixture of 1,000 Gaussians (clustered, like activations), queried with
1,000 fresh draws. Per method: build time, search time, search-time ratio to
scikit-learn, total-time ratio, recall@5 against scikit-learn's neighbours and
whether the neighbour lists are identical. The index is built once by 03 and
searched many times by 04 and the explorer, so the search ratio is the one the
method feels.
"""
from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from sklearn.neighbors import NearestNeighbors

K = 5


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def compare(name: str, X: np.ndarray, Q: np.ndarray, nlist: int, nprobe=(1, 2, 4, 16)) -> None:
    X, Q = np.ascontiguousarray(X, np.float32), np.ascontiguousarray(Q, np.float32)
    print(f"\n== {name}: {len(X):,} x {X.shape[1]} vectors, {len(Q):,} queries, k = {K}, "
          f"faiss threads {faiss.omp_get_max_threads()} ==")
    nn, t_fit = timed(lambda: NearestNeighbors(n_neighbors=K, algorithm="brute").fit(X))
    (_, ref), t_ref = timed(lambda: nn.kneighbors(Q))
    rows = [("sklearn NearestNeighbors(brute)", t_fit, t_ref, ref)]

    def flat():
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(X)
        return index

    index, t_build = timed(flat)
    (_, ids), t_search = timed(lambda: index.search(Q, K))
    rows.append(("faiss IndexFlatL2 (exact)", t_build, t_search, ids))

    def ivf():
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(X.shape[1]), X.shape[1], nlist)
        rng = np.random.default_rng(0)
        index.train(X[np.sort(rng.choice(len(X), min(len(X), 64 * nlist), replace=False))])
        index.add(X)
        return index

    index, t_build = timed(ivf)
    for probe in nprobe:
        index.nprobe = probe
        (_, ids), t_search = timed(lambda: index.search(Q, K))
        rows.append((f"faiss IVFFlat nlist={nlist} nprobe={probe}", t_build, t_search, ids))

    print(f"{'method':38s} {'build s':>8s} {'search s':>9s} {'search x':>9s} {'total x':>8s} "
          f"{'recall@5':>9s} {'identical':>9s}")
    total_ref = t_fit + t_ref
    for method, build, searched, found in rows:
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(ref, found)])
        same = bool(np.array_equal(np.sort(ref, 1), np.sort(found, 1)))
        print(f"{method:38s} {build:8.2f} {searched:9.3f} {t_ref / searched:9.1f} "
              f"{total_ref / (build + searched):8.1f} {recall:9.3f} {str(same):>9s}")


def quick_profile_set():
    from helpers.pipeline.settings import load_profile
    from helpers.sampling import open_sample
    from helpers.search import load_index

    p = load_profile("quick")
    import json

    meta = json.loads((p.artifact("index") / "meta.json").read_text())
    layer = max(meta["shapes"], key=lambda k: meta["vectors"][k] * meta["shapes"][k][0])
    index, _ = load_index(p.artifact("index"), layer, device="cpu")
    X = index.reconstruct_n(0, index.ntotal)
    sample, _ = open_sample(p.artifact("sample"), layer)
    rng = np.random.default_rng(0)
    Q = np.asarray(sample)[np.sort(rng.choice(len(sample), 1000, replace=False))]
    return f"quick profile, {layer}", X, Q - np.asarray(sample, np.float64).mean(0)


def synthetic_set(n: int, d: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d), dtype=np.float32) * 3
    X = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, d), dtype=np.float32)
    Q = centres[rng.integers(0, 1000, 1000)] + rng.standard_normal((1000, d), dtype=np.float32)
    return f"synthetic mixture, n = {n:,}", X, Q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 16])
    args = parser.parse_args()
    try:
        name, X, Q = quick_profile_set()
        compare(name, X, Q, nlist=256, nprobe=args.nprobe)
    except FileNotFoundError as e:
        print(f"quick profile skipped: {e} (run `make figures` first)")
    compare(*synthetic_set(args.n), nlist=args.nlist, nprobe=args.nprobe)


if __name__ == "__main__":
    main()
