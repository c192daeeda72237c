"""PCABasis against the scikit-learn estimators a user would otherwise reach for.

    python bench/pca.py                    # n = 100,000, d = 4,096 and d = 256
    python bench/pca.py --n 20000 --d 256  # smaller

Activations are synthetic float32 (a decaying spectrum plus noise and a
positive offset, like pre-ReLU features) written to a .npy file. Each method
runs in a fresh process: the scikit-learn estimators load X into memory, as a
user would; PCABasis streams it from the memory-mapped file. Printed per
method: time, peak anonymous resident memory, ratio to PCABasis, and the largest
difference of explained-variance ratios from ``svd_solver="full"``. The
covariance pass of PCABasis is also timed against one symmetric ``X.T @ X``
over the same data in numpy (syrk) and torch (plain matmul): the limit.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_data(path: Path, n: int, d: int, seed: int = 0, chunk: int = 20000) -> None:
    rng = np.random.default_rng(seed)
    rank = min(d, 64)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T.astype(np.float32)
    scales = np.geomspace(20, 0.5, rank).astype(np.float32)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z = rng.standard_normal((m, rank), dtype=np.float32) * scales
        X[s:s + m] = z @ basis + 0.3 * rng.standard_normal((m, d), dtype=np.float32) + 1.0
    X.flush()


class PeakMemory:
    """Peak anonymous resident memory above the level at entry, sampled every 2 ms (MiB).

    Anonymous memory (``RssAnon``) is what a process allocates; pages of a
    memory-mapped file are page cache the kernel can drop, so they are not counted.
    """

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("RssAnon:"))
        return int(line.split()[1]) / 1024

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = self.peak - self.base


def _child(method: str, path: str, queue) -> None:
    out = {}
    mem = PeakMemory().__enter__()
    if method == "PCABasis (streamed)":
        from helpers.bases import StreamingMoments
        from helpers.bases.pca import PCABasis

        X = np.load(path, mmap_mode="r")
        t = time.perf_counter()
        moments = StreamingMoments()
        for s in range(0, len(X), 16384):
            moments.partial_fit(np.asarray(X[s:s + 16384]))
        moments.release()
        out["cov_pass_s"] = time.perf_counter() - t
        ratio = PCABasis.from_moments(moments).explained_variance_ratio_
    else:
        from sklearn.decomposition import PCA, IncrementalPCA

        t = time.perf_counter()
        X = np.load(path)  # in memory, as the user would hold it (load time included)
        if method == "IncrementalPCA":
            est = IncrementalPCA().fit(X)
        else:
            est = PCA(svd_solver=method.split('"')[1]).fit(X)
        ratio = est.explained_variance_ratio_
    mem.__exit__()
    out.update(time_s=time.perf_counter() - t, peak_mb=mem.mb, ratio=np.asarray(ratio, float).tolist())
    queue.put(out)


def _products(path: str, queue) -> None:
    import torch

    X = np.load(path)
    t = time.perf_counter()
    X.T @ X
    numpy_s = time.perf_counter() - t
    Xt = torch.from_numpy(X)
    t = time.perf_counter()
    Xt.T @ Xt
    queue.put({"numpy_syrk_s": numpy_s, "torch_matmul_s": time.perf_counter() - t})


def _run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


METHODS = ("PCABasis (streamed)", 'PCA(svd_solver="covariance_eigh")', 'PCA(svd_solver="full")', "IncrementalPCA")


def bench(n: int, d: int, folder: Path) -> None:
    path = folder / f"X_{n}x{d}.npy"
    make_data(path, n, d)
    print(f"\n== n = {n:,}, d = {d:,} float32 ({n * d * 4 / 2**30:.2f} GiB) ==")
    results = {m: _run(_child, m, str(path)) for m in METHODS}
    ref = np.array(results['PCA(svd_solver="full")']["ratio"])
    ours = results["PCABasis (streamed)"]
    print(f"{'method':36s} {'time s':>8s} {'peak MiB':>9s} {'time / ours':>11s} {'max |Δ ratio|':>14s}")
    for m, r in results.items():
        diff = np.abs(np.array(r["ratio"]) - ref).max()
        print(f"{m:36s} {r['time_s']:8.2f} {r['peak_mb']:9.0f} {r['time_s'] / ours['time_s']:11.2f} {diff:14.2e}")
    limit = _run(_products, str(path))
    print(f"covariance pass of PCABasis: {ours['cov_pass_s']:.2f} s; one X.T @ X over the same data: "
          f"numpy (syrk) {limit['numpy_syrk_s']:.2f} s, torch matmul {limit['torch_matmul_s']:.2f} s; "
          f"pass / syrk = {ours['cov_pass_s'] / limit['numpy_syrk_s']:.2f}")
    print(json.dumps({"n": n, "d": d, **{m: {k: round(v, 3) for k, v in r.items() if k != "ratio"}
                                          for m, r in results.items()}, "limit": limit}))
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, nargs="+", default=[4096, 256])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.d:
            bench(args.n, d, Path(tmp))


if __name__ == "__main__":
    main()
