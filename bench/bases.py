"""Every basis of notebook 02 against the scikit-learn estimators a user would otherwise reach for.

    python bench/fit.py                        # n = 100,000, d = 256, and the quick profile's conv3
    python bench/fit.py --n 20000 --sae-epochs 1   # smaller

Synthetic activations as in ``bench/pca.py`` (a decaying spectrum plus noise
and an offset, float32, in a memory-mapped .npy file) and, when it exists, a
quick-profile sample (``data/quick/mini_alexnet/sample/conv3.npy``, made by
``make figures``). Each method runs in a fresh process; printed per method:
fit time, peak anonymous resident memory (the memory map's page cache is not
counted), the variance explained by all its vectors (R², the end of Fig. 5's
curve) and where the time went. The package's bases stream the memory map;
scikit-learn's estimators get the data in memory, as a user would hold it.
The SAE's training throughput is vectors per second over its epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from pca import PeakMemory, _run, make_data  # noqa: E402 (the shared measuring tools of bench/pca.py)

K = 64
"""ICs and NMF components fitted (the profiles' default)."""


def _r2(basis, X, relu=False) -> float:
    from helpers.bases.curves import explained_curve

    return float(explained_curve(basis, X, relu=relu)[-1])


def _child(method: str, path: str, sae_epochs: int, queue) -> None:
    out, stages = {}, {}
    mem = PeakMemory().__enter__()
    t = time.perf_counter()
    if method in ("PCA + neurons (streamed)", "ICABasis (PCA-whitened)", "NMFBasis (MiniBatchNMF)", "SAEBasis"):
        from helpers import bases

        X = np.load(path, mmap_mode="r")
        s = time.perf_counter()
        fitted = bases.fit_bases(X, post_relu=True)
        pca = fitted["pca_pre_relu"]
        pca.components_  # solve the eigenproblem here
        stages["moments + eigh"] = time.perf_counter() - s
        if method == "PCA + neurons (streamed)":
            basis, relu = pca, False
        elif method == "ICABasis (PCA-whitened)":
            from helpers.bases import ICABasis

            s = time.perf_counter()
            basis, relu = ICABasis(K).fit(X, pca=pca), False
            stages["FastICA on the whitened subsample"] = time.perf_counter() - s
        elif method == "NMFBasis (MiniBatchNMF)":
            from helpers.bases import NMFBasis

            s = time.perf_counter()
            basis, relu = NMFBasis(K).fit(X), True
            stages["MiniBatchNMF epochs + codes pass"] = time.perf_counter() - s
        else:
            from helpers.bases.sae import SAEBasis

            s = time.perf_counter()
            basis, relu = SAEBasis(k=16, epochs=sae_epochs, device="cpu").fit(X), False
            fit_s = time.perf_counter() - s
            s = time.perf_counter()
            basis.transform(np.asarray(X[:20000]))
            codes_s = (time.perf_counter() - s) * len(X) / min(len(X), 20000)
            stages["training"] = fit_s - codes_s
            stages["final codes pass (estimated)"] = codes_s
            out["sae_vectors_per_s"] = len(X) * sae_epochs / stages["training"]
            out["dead_latents"] = int(np.sum(basis.dead_))
    else:
        from sklearn.decomposition import NMF, FastICA

        X = np.load(path)  # in memory, as the user would hold it (load time included)
        if method.startswith("FastICA"):
            est, relu = FastICA(K, whiten="unit-variance", random_state=0, max_iter=400).fit(X), False
        else:
            est, relu = NMF(K, init="nndsvda", random_state=0, max_iter=200).fit(np.maximum(X, 0)), True
        basis = _Sklearn(est, np.maximum(X, 0) if relu else X)
    mem.__exit__()
    out.update(time_s=time.perf_counter() - t, peak_mb=mem.mb, stages=stages)
    out["r2_all"] = _r2(basis, np.load(path, mmap_mode="r"), relu)
    queue.put(out)


class _Sklearn:
    """A fitted scikit-learn decomposition seen as a basis, for the R² of Fig. 5 (unit directions)."""

    def __init__(self, est, X):
        H = est.mixing_.T if hasattr(est, "mixing_") else est.components_
        norms = np.linalg.norm(H, axis=1)
        self.components_, self._norms, self._est = H / norms[:, None], norms, est
        self.mean_ = X.mean(0)
        self.code_mean_ = self.transform(X[:50000]).mean(0)

    def transform(self, X):
        return self._est.transform(np.asarray(X, np.float32)) * self._norms


PAIRS = (("PCA + neurons (streamed)", None), ("ICABasis (PCA-whitened)", "FastICA (scikit-learn, in memory)"),
         ("NMFBasis (MiniBatchNMF)", "NMF (scikit-learn, in memory)"), ("SAEBasis", None))


def bench(path: Path, title: str, sae_epochs: int) -> None:
    n, d = np.load(path, mmap_mode="r").shape
    print(f"\n== {title}: n = {n:,}, d = {d:,} float32 ({n * d * 4 / 2**30:.2f} GiB) ==")
    print(f"{'method':36s} {'time s':>8s} {'peak MiB':>9s} {'R² all':>7s} {'peer / ours':>11s}")
    results = {}
    for ours, peer in PAIRS:
        for m in (ours, peer):
            if m is None:
                continue
            r = results[m] = _run(_child, m, str(path), sae_epochs)
            ratio = f"{r['time_s'] / results[ours]['time_s']:11.2f}" if m == peer else ""
            print(f"{m:36s} {r['time_s']:8.2f} {r['peak_mb']:9.0f} {r['r2_all']:7.3f} {ratio}")
            for stage, s in r["stages"].items():
                print(f"    {stage}: {s:.2f} s")
    sae = results["SAEBasis"]
    print(f"SAE training: {sae['sae_vectors_per_s']:,.0f} vectors/s on this CPU ({sae_epochs} epochs, "
          f"{4 * d} latents, k = 16); dead latents after training: {sae['dead_latents']}")
    print(json.dumps({"title": title, "n": int(n), "d": int(d), **results}, default=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--sae-epochs", type=int, default=2)
    parser.add_argument("--layer", default=str(Path(__file__).resolve().parent.parent / "data" / "quick" /
                                               "mini_alexnet" / "sample" / "conv3.npy"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"X_{args.n}x{args.d}.npy"
        make_data(path, args.n, args.d)
        bench(path, "synthetic", args.sae_epochs)
    if Path(args.layer).exists():
        bench(Path(args.layer), f"quick profile, {Path(args.layer).stem} of mini_alexnet", args.sae_epochs)
    else:
        print(f"\n(no quick-profile sample at {args.layer}: run make figures first to bench a real layer)")


if __name__ == "__main__":
    main()
