"""Activation sampling throughput: all layers in one pass vs one pass per layer vs the bare forward.

    python bench/sampling.py                     # quick profile: mini_alexnet, Fashion-MNIST test split
    python bench/sampling.py --model mini_resnet  # or mini_vit: the quick stand-ins (shipped weights)
    python bench/sampling.py --model vit_b_16 --n 512 --device cuda   # torchvision networks, 224 px

"bare forward" runs the same DataLoader and model with nothing captured or
written: the limit. "one pass, all layers" is ``sampling.sample_activations``
as notebook 01 calls it (hooks, position gather, copy to host, write to the
memory maps). "one pass per layer" calls it once per layer, as a hook-per-run
tool would. Best of ``--repeat`` runs; images/s and ratios printed.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import models, sampling
from helpers.pipeline.settings import load_profile


def bare_forward(model, dataset, batch_size, device):
    loader = DataLoader(dataset, batch_size=batch_size, pin_memory=device.type == "cuda")
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini_alexnet", help="any model name of helpers/models/registry.py")
    parser.add_argument("--n", type=int, default=None, help="images (default: the whole test split / 256)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    device = models.get_device(args.device)
    if models.is_trained_here(args.model):
        p = load_profile("quick", model=args.model)
        model, _ = models.load_model(p, device=device)
        test = models.load_dataset(p, "test")
        n = args.n or len(test)
        x = torch.stack([test[i][0] for i in range(n)])
        dataset = TensorDataset(x, torch.zeros(n, dtype=torch.long))
    else:
        model = models.architecture(args.model).to(device)  # speed does not depend on the weights
        n = args.n or 256
        dataset = TensorDataset(torch.randn(n, 3, 224, 224), torch.zeros(n, dtype=torch.long))
    layers = models.default_layers(args.model)
    print(f"{args.model} on {device}, {n} images, {len(layers)} layers, batch {args.batch_size}, "
          f"threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        run = iter(range(10**6))

        def sample(layers):
            sampling.sample_activations(model, dataset, layers, Path(tmp) / f"s{next(run)}", {},
                                        batch_size=args.batch_size, device=device)

        bare_forward(model, dataset, args.batch_size, device)  # warm-up
        t_bare = best_of(args.repeat, lambda: bare_forward(model, dataset, args.batch_size, device))
        t_one = best_of(args.repeat, lambda: sample(layers))
        t_each = best_of(args.repeat, lambda: [sample([layer]) for layer in layers])

    print(f"{'':28s} {'images/s':>10s} {'vs bare':>8s}")
    for name, t in (("bare forward (limit)", t_bare), (f"one pass, all {len(layers)} layers", t_one),
                    (f"one pass per layer ({len(layers)})", t_each)):
        print(f"{name:28s} {n / t:10.0f} {t_bare / t:8.2f}")
    print(f"one pass vs one pass per layer: {t_each / t_one:.2f}x faster; "
          f"one pass / bare forward = {t_bare / t_one:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
