"""The cost of a run before it starts: the disk, memory and time of each planned step (``--dry-run``), and the
refusal of a run whose artifacts would not fit the free disk.

:func:`scale` measures what every step's cost is computed from (the layers' shapes from one forward pass of
the architecture on a blank input, the images of each split, the model's size); each step's cost function
(declared with its artifact, :mod:`helpers.pipeline.costs`) turns that into bytes and work, and
:func:`calibrate` measures the user's device in a few seconds (the forward pass, the loader, dense products,
an eigensolve, mask arithmetic) to turn the work into time: the rates ``bench/paper_scale.py`` compares with
the device's limits, measured here on the run's own model, images and settings.
"""
from __future__ import annotations

import copy
import csv
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from . import steps as _steps  # noqa: F401  importing the catalogue declares every step (and its cost)
from .pipeline import provenance
from .pipeline.costs import Cost, Rates, Scale, duration, human

CALIBRATION_SECONDS = 1.0
"""Seconds each timed part of :func:`calibrate` runs for (the forward pass, the loader at most a few more)."""


def scale(p) -> Scale:
    """The :class:`Scale` of profile ``p``: shapes, image counts and model size, without reading an image."""
    from .explain.probe import broden_folder, concepts_source
    from .images.common import example
    from .models.inputs import selection
    from .models.registry import architecture
    from .models.sites import sites

    model = architecture(p.model)
    dataset, sample = selection(p, "sample")
    x = example(dataset)
    found = sites(model, p.layers, x)
    images = {"sample": len(sample), "eval": len(selection(p, "eval")[1]),
              "ablation": len(selection(p, "ablation")[1])}
    side, probe = int(x.shape[-1]), images["eval"]
    if concepts_source(p) == "broden":
        side, probe = _broden(Path(broden_folder(p)), p)
    images["probe"] = min(probe, p.n_probe) if p.n_probe else probe
    return Scale(shapes={k: tuple(s.shape) for k, s in found.items()}, images=images, input_shape=tuple(x.shape),
                 param_bytes=sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
                 forward_bytes=_forward_bytes(model, x), relu={k: s.relu for k, s in found.items()},
                 map_layers=tuple(k for k, s in found.items() if s.kind != "vector"), mask_side=side,
                 input_dtype=str(x.dtype).removeprefix("torch."))


def _broden(root: Path, p) -> tuple[int, int]:
    """``(mask side, probe images)`` of a Broden folder, from its index.csv."""
    rows, side = 0, p.mask_size
    with open(root / "index.csv", newline="") as f:
        for r in csv.DictReader(f):
            if p.broden_subset == "all" or r["image"].split("/")[0] == p.broden_subset:
                rows += 1
                side = side or int(r["sh"])
    return side or 112, rows


@torch.no_grad()
def _forward_bytes(model, x) -> int:
    """The largest input + output of any module in one image's forward pass, in bytes."""
    peak = [0]

    def size(t):
        if isinstance(t, torch.Tensor):
            return t.numel() * t.element_size()
        return sum(size(v) for v in t) if isinstance(t, (tuple, list)) else 0

    def hook(module, args, out):
        peak[0] = max(peak[0], size(args) + size(out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.eval()(x.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    return int(peak[0])


def _timed(fn, device, seconds: float = CALIBRATION_SECONDS) -> float:
    """Calls per second of ``fn`` (after one warm-up call), over at least ``seconds``."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


@torch.no_grad()
def calibrate(p, s: Scale) -> tuple[Rates, dict]:
    """Measure the rates of :class:`Rates` on the profile's device; returns them and what was measured
    (``{"seconds": …, "device": …, "forward batch": …, "loading": "…"}``).

    The forward pass is the profile's architecture (weights do not change its speed) on a blank batch at
    the profile's precision; the loader reads the first images of the sample split as 01 does (its rate
    stays unmeasured, and the forward rate stands for it, when those images cannot be read).
    """
    from .images.batches import Batches
    from .models.inputs import selection
    from .models.registry import architecture
    from .models.running import get_device, place, precision

    start = time.perf_counter()
    device = get_device(p.device)
    model = place(copy.deepcopy(architecture(p.model)), device)  # the cached instance stays on the CPU
    batch = max(1, min(p.batch_size, 64 if device.type == "cpu" else p.batch_size))
    x = torch.zeros((batch, *s.input_shape), dtype=getattr(torch, s.input_dtype), device=device)
    with precision(p.precision, device):
        forwards = batch * _timed(lambda: model(x), device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{device.type}, {torch.get_num_threads()} threads", "forward batch": batch}
    dataset, indices = selection(p, "sample")
    n = int(min(len(indices), p.batch_size * max(2, p.num_workers)))
    try:
        t = time.perf_counter()
        for xb, _, _ in Batches(dataset, indices[:n], p.batch_size, p.num_workers, device):
            xb.to(device)
        loading = n / (time.perf_counter() - t)
        info["loading"] = f"{loading:,.0f} img/s ({n} images, {p.num_workers} workers)"
    except (OSError, RuntimeError, ValueError) as e:
        loading = forwards
        info["loading"] = f"not measured: the first images could not be read ({type(e).__name__})"
    flops = {}
    for dtype in (torch.float64, torch.float32):
        A = torch.randn(2048, 1024, device=device, dtype=dtype)
        flops[dtype] = 2 * 2048 * 1024 * 1024 * _timed(lambda: A.T @ A, device, CALIBRATION_SECONDS / 4)
    C = np.random.default_rng(0).standard_normal((384, 384))
    C = C @ C.T
    eigh = 384 ** 3 * _timed(lambda: np.linalg.eigh(C), torch.device("cpu"), CALIBRATION_SECONDS / 4)
    a, b = (np.random.default_rng(1).integers(0, 256, 1 << 24, dtype=np.uint8) for _ in range(2))
    bits = a.nbytes * _timed(lambda: np.count_nonzero(a & b), torch.device("cpu"), CALIBRATION_SECONDS / 4)
    info["seconds"] = time.perf_counter() - start
    rates = Rates(images=min(forwards, loading), forwards=forwards, flop64=flops[torch.float64],
                  flop32=flops[torch.float32], eigh=eigh, bits=bits)
    return rates, info


def costs(p, numbers, s: Scale | None = None) -> dict:
    """``{number: Cost}`` of the steps ``numbers`` that would write something: the artifacts they make that
    are not current (a current one is reused)."""
    s = s or scale(p)
    out = {}
    for number in numbers:
        total = Cost()
        for artifact in provenance.notebooks()[number].makes:
            if not provenance.applies(p, artifact) or provenance.status(p, artifact)[0] == "current":
                continue
            total = total + (provenance.cost(p, artifact, s) or Cost())
        out[number] = total
    return out


def free_bytes(path) -> tuple[int, Path]:
    """Free bytes on the disk that holds ``path`` (its nearest existing folder), and that folder."""
    folder = Path(path)
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free, folder


def disk_problem(p, found: dict) -> str | None:
    """Why the steps' artifacts would not fit the free disk (with the numbers), or ``None`` when they fit."""
    need = sum(c.disk for c in found.values()) + max((c.scratch for c in found.values()), default=0)
    free, folder = free_bytes(p.data_path)
    if need <= free:
        return None
    parts = ", ".join(f"{provenance.notebooks()[n].notebook} {human(c.disk + c.scratch)}"
                      for n, c in found.items() if c.disk + c.scratch)
    return (f"the run would write about {human(need)} ({parts}) into {p.data_path}, but its disk has "
            f"{human(free)} free ({folder}): free space, set data_dir to a folder on a larger disk, or run fewer "
            "steps or layers (--dry-run shows each step's estimate).")


def check_disk(p, numbers) -> None:
    """Refuse a run whose artifacts would not fit the free disk (ValueError with the numbers)."""
    problem = disk_problem(p, costs(p, numbers))
    if problem:
        raise ValueError(problem)


def dry_run(p, steps, missing, say) -> str | None:
    """Print the plan (``steps``: ``[(notebook, why)]``) with each step's disk, memory and time and what is
    ``missing`` (fetched by a run, or to be provided); nothing is written. Returns why the disk would not hold
    the run (:func:`disk_problem`), or ``None``."""
    s = scale(p)
    numbers = [nb.stem.split("_")[0] for nb, _ in steps]
    found = costs(p, numbers, s)
    rates, info = calibrate(p, s)
    device = info["device"]
    say(f"dry run: nothing is written. Times are projections from a {info['seconds']:.1f} s calibration on "
        f"{p.device or 'the default device'} ({device}).")
    header = f"{'step':24s} {'disk':>10s} {'host mem':>10s} {'device mem':>10s} {'time':>8s}  why"
    say(header)
    for nb, why in steps:
        c = found[nb.stem.split("_")[0]]
        written = c.disk or c.host or c.work
        cells = [human(c.disk + c.scratch), human(c.host), human(c.device), duration(rates.seconds(c.work))] \
            if written else ["—", "—", "—", "—"]
        say(f"{nb.stem:24s} {cells[0]:>10s} {cells[1]:>10s} {cells[2]:>10s} {cells[3]:>8s}  {why}"
            + (f" ({c.note})" if c.note else "") + ("" if written else "; reused or writes only figures"))
    total = sum(c.disk for c in found.values()) + max((c.scratch for c in found.values()), default=0)
    free, folder = free_bytes(p.data_path)
    seconds = sum(rates.seconds(c.work) for c in found.values())
    say(f"{'total':24s} {human(total):>10s} {'':>10s} {'':>10s} {duration(seconds):>8s}  "
        f"{human(free)} free on {folder}")
    say(f"calibration: forward {rates.forwards:,.0f} img/s (batch {info['forward batch']}, {p.precision}); "
        f"loading {info['loading']}; products {rates.flop64 / 1e9:,.0f} GFLOP/s float64, {rates.flop32 / 1e9:,.0f} "
        f"float32. 05 counts every setting as a full forward pass: an upper bound.")
    for m in missing:
        say(("a run fetches first: " if m.fetch else "missing: ") + m.line()
            + (f" ({human(m.download)} download)" if m.download else ""))
    return disk_problem(p, found)
