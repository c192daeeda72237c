"""Running a model: the device (no global one), the memory format, placing the model, top-1 accuracy, and
the content hash of its weights.
"""
from __future__ import annotations

import hashlib
import logging

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


def memory_format(device) -> torch.memory_format:
    """How a model's 4-D tensors are laid out on ``device``: channels-last on the CPU, else contiguous.

    On the CPU, oneDNN's channels-last convolutions ran the stand-ins 1.2-2 times
    faster than the default layout (``bench/ablation.py`` prints the forward
    rate of both); on other devices the default layout is kept.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


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
