"""The ablation sweep (prefix once per batch, settings stacked) vs a naive full forward per setting.

    python bench/sweep.py                 # quick profile, 500 eval images, every layer
    python bench/sweep.py --n 2000 --layers conv1 fc1
    python bench/sweep.py --model mini_resnet   # or mini_vit (after `make figures MODEL=...`)

Both compute top-1 accuracy for the same settings on the quick profile's
(cached) model and bases: the naive way runs ``model(x)`` under
``ablation.ablate`` once per setting, as one would with a hook library. The
accuracies agree (up to an image whose logits tie within float rounding); the time ratio is printed per layer and overall.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from helpers import ablation, bases, models
from helpers.images import select
from helpers.pipeline import provenance
from helpers.pipeline.settings import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="eval images")
    parser.add_argument("--layers", nargs="+", default=None)
    parser.add_argument("--model", default=None, help="a stand-in (default: the quick profile's)")
    args = parser.parse_args()

    p = load_profile("quick", model=args.model)
    net, _ = models.load_model(p, device="cpu", train=False)
    images = models.load_dataset(p, p.eval_split)
    indices = select(len(images), args.n, p.seed)
    key = provenance.expected(p, "bases")  # the quick profile's current bases, or a clear error
    table, _ = bases.explained_variance_table(p.artifact("bases"), p.layers, key=key)
    print(f"quick profile, {p.model}, {len(indices)} eval images, batch {p.batch_size}")
    w = max(len(layer) for layer in args.layers or p.layers)
    print(f"{'layer':{w}s} {'settings':>8s} {'sweep s':>8s} {'naive s':>8s} {'ratio':>6s}  max |Δ top1|")
    total_sweep = total_naive = 0.0
    for layer in args.layers or p.layers:
        pca = bases.load_basis(p.artifact("bases"), layer, "pca_pre_relu", key)
        neuron = bases.load_basis(p.artifact("bases"), layer, "neuron_pre_relu", key)
        comps = {"pca": pca.components_, "neuron": neuron.components_}
        marks = table[table.layer == layer]
        counts = ablation.count_grid(len(pca.components_), False, extra=[*marks.k80, *marks.k99])

        t = time.perf_counter()
        rows = ablation.sweep_layer(net, images, layer, comps, pca.mean_, counts, indices=indices,
                                    batch_size=p.batch_size, device="cpu")
        t_sweep = time.perf_counter() - t

        t = time.perf_counter()
        naive = []
        for basis, order, n in ablation.settings(comps, counts):
            V = comps[basis][:n] if order == "descending" else comps[basis][len(comps[basis]) - n:]
            with ablation.ablate(net, layer, V, pca.mean_):
                naive.append(models.evaluate(net, images, indices, p.batch_size, "cpu"))
        t_naive = time.perf_counter() - t

        diff = np.abs(np.array([r["top1"] for r in rows]) - naive).max()
        print(f"{layer:{w}s} {len(rows):8d} {t_sweep:8.2f} {t_naive:8.2f} {t_naive / t_sweep:6.1f}  {diff:.4f}")
        total_sweep += t_sweep
        total_naive += t_naive
    print(f"overall: sweep {total_sweep:.1f} s, naive {total_naive:.1f} s, ratio {total_naive / total_sweep:.1f}")


if __name__ == "__main__":
    main()
