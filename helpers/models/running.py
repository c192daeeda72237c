"""Running a model: the device (no global one), the memory format, placing the model, top-1 accuracy, and
the content hash of its weights.
"""
from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from ..images.batches import Batches

log = logging.getLogger(__name__)


def state_hash(model: nn.Module) -> str:
    """``sha256:`` of every parameter and buffer, names included (weights that are not named)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{h.hexdigest()}"


def get_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def check_device(p) -> None:
    """Refuse a ``device`` setting that names a device torch cannot see here (before any work starts).

    Raises
    ------
    ValueError
        Naming the setting, the profile, what torch sees, and the fix.
    """
    if p.device is None:
        return
    device = torch.device(p.device)
    where = f"setting device={p.device!r} (profile {p.name})"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"{where}: torch {torch.__version__} ({build}) sees no CUDA device here; use "
                             "-p device=cpu (or leave device unset: CUDA when available), or run on a machine with "
                             "a GPU and a CUDA build of torch (docs/gpus.md).")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{where}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}; use one of "
                             "them (CUDA_VISIBLE_DEVICES renumbers them from 0).")
    available = {"mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if device.type in available and not available[device.type]():
        raise ValueError(f"{where}: torch {torch.__version__} has no {device.type} device here; use -p device=cpu "
                         "or leave device unset.")


def memory_format(device) -> torch.memory_format:
    """How a model's 4-D tensors are laid out on ``device``: channels-last on the CPU, else contiguous.

    On the CPU, oneDNN's channels-last convolutions ran the stand-ins 1.2-2 times
    faster than the default layout (``bench/ablation.py`` prints the forward
    rate of both); on other devices the default layout is kept.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


PRECISIONS = ("fp32", "tf32", "bf16")


def _fp32_switches():
    """``(module, attribute)`` of the float32-precision switches of CUDA's matrix products and convolutions."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        return [(matmul, "fp32_precision", "ieee", "tf32"), (conv, "fp32_precision", "ieee", "tf32")]
    return [(matmul, "allow_tf32", False, True), (torch.backends.cudnn, "allow_tf32", False, True)]


@contextmanager
def precision(mode: str = "fp32", device=None):
    """Run the forward passes inside in the arithmetic ``mode`` on ``device``; restores the switches after.

    ``fp32``: IEEE float32 throughout, also for cuDNN's convolutions (which
    PyTorch otherwise runs in TensorFloat-32 on CUDA by default). ``tf32``:
    TensorFloat-32 matrix products and convolutions on CUDA (float32 on other
    devices). ``bf16``: ``torch.autocast`` to bfloat16 on the device (CPU too).
    """
    if mode not in PRECISIONS:
        raise ValueError(f"precision={mode!r} is unknown; use one of {PRECISIONS}.")
    device = get_device(device)
    switches = _fp32_switches()
    old = [getattr(m, a) for m, a, _, _ in switches]
    try:
        for m, a, ieee, tf32 in switches:
            setattr(m, a, tf32 if mode == "tf32" else ieee)
        if mode == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        for (m, a, _, _), value in zip(switches, old):
            setattr(m, a, value)


def place(model: nn.Module, device=None) -> nn.Module:
    """``model`` in eval mode on ``device`` (``None``: CUDA when available), in its :func:`memory_format`."""
    device = get_device(device)
    return model.eval().to(device=device, memory_format=memory_format(device))


@torch.no_grad()
def correct_count(model, dataset, indices=None, batch_size: int = 256, device=None,
                  num_workers: int = 0, desc: str = "evaluate") -> tuple[int, int]:
    """``(correct, total)``: top-1 hits of ``model`` on ``dataset`` (or the images ``indices``)."""
    device = get_device(device)
    place(model, device)
    correct = total = 0
    batches = Batches(dataset, indices, batch_size, num_workers, device)
    for x, y, _ in tqdm(batches, desc=desc, leave=False):
        pred = model(x.to(device, non_blocking=True)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct, total


def evaluate(model, dataset, indices=None, batch_size: int = 256, device=None,
             num_workers: int = 0, desc: str = "evaluate") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (or the images ``indices``)."""
    correct, total = correct_count(model, dataset, indices, batch_size, device, num_workers, desc)
    return correct / total
