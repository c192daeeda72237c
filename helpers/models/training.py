"""Training the stand-in networks, reproducibly across machines.

Float results on a CPU depend on the instruction set the kernels were chosen
for (AVX-512 vs AVX2), on oneDNN's convolution algorithms and on how many
threads split a sum; over a thousand training steps those last-bit
differences grow into a different network (e.g. 86.65 % instead of 87.0 %
test accuracy, and 80 %/99 % counts off by 1–3). So the stand-ins are trained
in a child process with a pinned numerical environment:

- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own kernels use AVX2 even on AVX-512 CPUs;
- ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility, the
  same results on every AVX2 CPU whatever the number of threads;
- oneDNN off (``torch.backends.mkldnn``): convolutions go through MKL;
- deterministic algorithms, a seeded generator for the shuffle and the dropout;
- two threads (:data:`THREADS`) on every machine: the convolutional stand-ins
  give the same weights with any thread count, ``mini_vit`` does not.

The same profile and seed then give the same weights, bit for bit, on any
x86-64 CPU with AVX2 and the same PyTorch version. It
costs about twice the time of unpinned training on the CPU (about 1.5 minutes
for the quick profile on 2 cores). Training always runs on the CPU.

    python -m helpers.models.training PROFILE_JSON OUT   # what load_model starts; not for users
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..images.common import images_key, select
from ..pipeline import provenance
from ..pipeline.settings import ROOT, Profile
from .inputs import load_dataset

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
"""Environment of the training process (read by PyTorch and MKL when they start)."""


THREADS = 2
"""Threads of the pinned training process, on every machine: ``mini_vit``'s weights depend on the
thread count (PyTorch's attention and layer-norm kernels split their sums by thread), the
convolutional stand-ins' do not."""


HYPER = {"lr": 1e-3, "batch_size": 128}
"""Adam's learning rate and the batch size of every stand-in."""


def train(profile: Profile, build) -> tuple[nn.Module, int, int]:
    """Train ``build()`` on the profile's training images (Adam, seeded) in this process.

    Returns the model (eval mode, CPU) and ``(correct, total)`` of its top-1 on
    the profile's eval images. Reproducible across machines only inside
    :func:`train_pinned`.
    """
    from .running import correct_count

    torch.manual_seed(profile.seed)
    images = load_dataset(profile, "train")
    idx = select(len(images), profile.train_limit, profile.seed)
    batches = DataLoader(Subset(images, idx), batch_size=HYPER["batch_size"], shuffle=True,
                         generator=torch.Generator().manual_seed(profile.seed))
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=HYPER["lr"])
    for epoch in range(profile.train_epochs):
        model.train()
        for x, y in tqdm(batches, desc=f"train {profile.model}, epoch {epoch + 1}/{profile.train_epochs}"):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    test = load_dataset(profile, profile.eval_split)
    correct, total = correct_count(model, test, select(len(test), profile.n_eval, profile.seed), device="cpu",
                                   desc="test accuracy")
    return model.eval(), correct, total


def train_pinned(profile: Profile, out, threads: int | None = None) -> dict:
    """Train the profile's stand-in in a child process with :data:`PINNED_ENV`; save its weights to ``out``.

    Returns ``{"test_accuracy", "test_correct", "test_images", "torch": version, "threads", "environment"}``.

    Raises
    ------
    RuntimeError
        When the child fails; its error output is included.
    """
    return train_child(profile, out, threads=threads, pinned=True)


def train_child(profile: Profile, out, *, threads: int | None = None, pinned: bool = True,
                env: dict | None = None) -> dict:
    """:func:`train_pinned`, or (``pinned=False``, for ``bench/training.py``) in the machine's own environment."""
    env = {**os.environ, **(PINNED_ENV if pinned else {}), **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads is None and pinned:
        threads = THREADS
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    spec = json.dumps(dataclasses.asdict(profile))
    return run_child(["helpers.models.training", spec, str(out)] + ([] if pinned else ["--unpinned"]), env,
                     profile.model)


def run_child(args: list, env: dict, model: str) -> dict:
    """``python -m *args`` in ``env``: its error output shown here, the JSON of its last output line returned."""
    child = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=str(ROOT))
    relay = threading.Thread(target=_relay, args=(child.stderr, sys.stderr), daemon=True)
    relay.start()  # progress bars and errors, shown where this process shows them (a notebook, a terminal)
    result = child.stdout.read().decode()
    relay.join()
    if child.wait() != 0:
        raise RuntimeError(f"training {model} failed in its process (exit code {child.returncode}); "
                           "its error is printed above.")
    return json.loads(result.strip().splitlines()[-1])


def _relay(source, sink) -> None:
    for chunk in iter(lambda: source.read1(4096), b""):
        sink.write(chunk.decode(errors="replace"))
        sink.flush()


def main(argv=None) -> int:
    from .registry import builder

    args = list(argv or sys.argv[1:])
    pinned = "--unpinned" not in args
    spec, out = [a for a in args if a != "--unpinned"]
    fields = json.loads(spec)
    fields["layers"] = tuple(fields["layers"])
    profile = Profile(**fields)
    if pinned:
        torch.backends.mkldnn.enabled = False
        torch.use_deterministic_algorithms(True)
    model, correct, total = train(profile, builder(profile.model))
    torch.save(model.state_dict(), Path(out))
    environment = {k: os.environ.get(k) for k in PINNED_ENV}
    print(json.dumps({"test_accuracy": correct / total, "test_correct": correct, "test_images": total, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "environment": {**environment, "mkldnn": torch.backends.mkldnn.enabled, "device": "cpu"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def checkpoint_key(profile: Profile) -> dict:
    """What a stand-in's checkpoint is made from: model, training settings, training images, code."""
    from .training import HYPER

    images = load_dataset(profile, "train")
    return provenance.key("models.loading",
                          {"model": profile.model, "epochs": profile.train_epochs, "seed": profile.seed, **HYPER},
                          {"images": images_key(images, select(len(images), profile.train_limit, profile.seed))})
