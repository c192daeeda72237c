"""What the pinned numerical environment of stand-in training buys, and what it costs.

Trains the quick profile's ``mini_alexnet`` from one seed in several CPU
environments, each in a fresh process, and reports the time, the test
accuracy, a hash of the weights, and the 80 %/99 % counts of the PCA and
neuron bases of each layer (sample of ``--n-sample`` training images):

- pinned (``helpers.models.training``), 2 threads and 1 thread: the package's way;
- unpinned, 2 threads and 1 thread: PyTorch's defaults (AVX-512 where the CPU
  has it, oneDNN convolutions);
- unpinned with AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``,
  ``ONEDNN_MAX_CPU_ISA=AVX2``): what an AVX2-only CPU would run.

    python bench/training.py                 # the quick profile (about 10 minutes on 2 cores)
    python bench/training.py --train-limit 10000 --epochs 1
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helpers import bases, models, sampling
from helpers.images import select
from helpers.models import training
from helpers.pipeline.settings import load_profile

VARIANTS = [
    ("pinned, 2 threads", dict(pinned=True, threads=2)),
    ("pinned, 1 thread", dict(pinned=True, threads=1)),
    ("unpinned, 2 threads", dict(pinned=False, threads=2)),
    ("unpinned, 1 thread", dict(pinned=False, threads=1)),
    ("unpinned, AVX2 kernels", dict(pinned=False, threads=2,
                                    env={"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"})),
]


def counts_table(p, weights, folder) -> dict:
    """``{(layer, basis): (k80, k99)}`` of a model's sample (pre-ReLU PCA and neurons)."""
    model = models.builder(p.model)()
    model.load_state_dict(weights)
    images = models.load_dataset(p, p.sample_split)
    indices = select(len(images), p.n_sample, p.seed)
    sampling.sample_activations(model.eval(), images, p.layers, folder, {}, indices=indices, seed=p.seed,
                                batch_size=p.batch_size, device="cpu")
    out = {}
    for layer in p.layers:
        X, _ = sampling.open_sample(folder, layer)
        fitted = bases.fit_bases(X, post_relu=False)
        for curve in ("pca_pre_relu", "neuron_pre_relu"):
            out[layer, curve] = tuple(bases.counts(fitted[curve].explained_variance_ratio_))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the quick profile's 2)")
    parser.add_argument("--n-sample", type=int, default=20000, help="images sampled for the counts")
    args = parser.parse_args()
    p = load_profile("quick", train_limit=args.train_limit, train_epochs=args.epochs, n_sample=args.n_sample)
    print(f"mini_alexnet, quick profile, {p.train_epochs} epoch(s) on {args.train_limit or 60000} images, "
          f"torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, kw) in enumerate(VARIANTS):
            out = Path(tmp) / f"{i}.pt"
            t = time.perf_counter()
            result = training.train_child(p, out, **kw)
            seconds = time.perf_counter() - t
            weights = torch.load(out, weights_only=True)
            digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in weights.values())).hexdigest()[:12]
            rows.append((name, seconds, result["test_accuracy"], digest, counts_table(p, weights, Path(tmp) / f"s{i}")))
    reference = rows[0][4]
    print(f"{'environment':24s} {'train s':>8s} {'top-1':>7s} {'weights':>13s} {'k80/k99 pairs off':>18s}  max |Δk|")
    for name, seconds, acc, digest, table in rows:
        off = [k for k in table if table[k] != reference[k]]
        worst = max((max(abs(np.subtract(table[k], reference[k]))) for k in off), default=0)
        print(f"{name:24s} {seconds:8.1f} {100 * acc:6.2f}% {digest:>13s} {len(off):>8d} of {len(table):<7d}  {worst}")
    pinned = rows[0][1]
    print(f"pinned training costs {pinned / rows[2][1]:.2f}x the unpinned time (2 threads); "
          f"pinned 1 and 2 threads give {'the same' if rows[0][3] == rows[1][3] else 'DIFFERENT'} weights")


if __name__ == "__main__":
    main()
