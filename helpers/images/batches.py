"""Feeding a model: the chosen images of a dataset in order, in batches, skipping unreadable ones if asked.

Every step that runs a network over images (sampling, indexing, ablation,
evaluation) iterates :class:`Batches`, so which images it saw, and which it
could not read, are decided in one place.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .common import BadImageError


class _Slots(Dataset):
    """Item ``j`` is image ``indices[start + j]`` with its slot ``start + j``, or a bad-image record."""

    def __init__(self, dataset, indices, start, skip_bad, stop=None):
        self.dataset, self.indices, self.start, self.skip_bad = dataset, indices, start, skip_bad
        self.stop = len(indices) if stop is None else stop

    def __len__(self):
        return max(0, self.stop - self.start)

    def __getitem__(self, j):
        slot = self.start + j
        i = int(self.indices[slot])
        try:
            x, y = self.dataset[i]
        except BadImageError as e:
            if not self.skip_bad:
                raise
            path = self.dataset.describe(i) if hasattr(self.dataset, "describe") else str(i)
            cause = e.__cause__ or e
            return None, None, slot, {"slot": slot, "index": i, "path": path,
                                      "error": f"{type(cause).__name__}: {cause}"}
        return x, y, slot, None


def _collate(items, stack=True):
    """``(x, y, slots, bad)``; ``x`` stacked, or the list of items (file bytes of differing lengths) when not ``stack``."""
    good = [it for it in items if it[0] is not None]
    x = (default_collate([it[0] for it in good]) if stack else [it[0] for it in good]) if good else None
    y = default_collate([it[1] for it in good]) if good else None
    slots = torch.tensor([it[2] for it in good], dtype=torch.long)
    return x, y, slots, [it[3] for it in items if it[0] is None]


class Batches:
    """The images ``indices`` of ``dataset`` in batches ``(x, y, slots)``, in order.

    ``slots`` (LongTensor) are positions in ``indices``. Pinned when bound for
    CUDA. An unreadable image stops the iteration with :class:`BadImageError`
    (its path and index), unless ``skip_bad``: then it is left out of its batch
    and recorded in :attr:`bad` (``slot``, ``index``, ``path``, ``error``).
    ``start`` skips the first slots (resuming) and ``stop`` ends before that
    slot (one rank's shard, :func:`helpers.pipeline.distributed.shard`);
    :attr:`next_slot` is the first slot not yet delivered or skipped.

    A dataset whose ``decode`` is ``"device"`` and that has ``finish`` yields
    encoded files; each batch of them is decoded and preprocessed by
    ``dataset.finish(encoded, device, indices)`` here, so ``x`` comes on
    ``device`` (an image it cannot decode is named or skipped as above).
    """

    def __init__(self, dataset, indices=None, batch_size: int = 256, num_workers: int = 0, device=None,
                 skip_bad: bool = False, start: int = 0, stop: int | None = None):
        indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        self.bad, self.next_slot = [], start
        self.dataset, self.indices, self.skip_bad, self.device = dataset, indices, skip_bad, device
        self.finish = getattr(dataset, "finish", None) if getattr(dataset, "decode", "pil") == "device" else None
        self.loader = DataLoader(_Slots(dataset, indices, start, skip_bad, stop), batch_size=batch_size,
                                 num_workers=num_workers, collate_fn=partial(_collate, stack=self.finish is None),
                                 pin_memory=torch.device(device or "cpu").type == "cuda")

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y, slots, bad in self.loader:
            if self.finish is not None and len(slots):
                x, y, slots, bad = self._finish(x, y, slots, bad)
            self.bad.extend(bad)
            self.next_slot = max([self.next_slot - 1, *slots.tolist(), *(r["slot"] for r in bad)]) + 1
            if len(slots):
                yield x, y, slots

    def _finish(self, encoded, y, slots, bad):
        """Decode a batch on the device; with ``skip_bad``, leave out (and record) the files that cannot be."""
        indices = self.indices[slots.numpy()]
        try:
            return self.finish(encoded, self.device, indices), y, slots, bad
        except BadImageError as e:
            failed = getattr(e, "failed", None)
            if not self.skip_bad or not failed:
                raise
        drop = {k for k, _ in failed}
        for k, err in failed:
            cause = err.__cause__ or err
            i = int(indices[k])
            path = self.dataset.describe(i) if hasattr(self.dataset, "describe") else str(i)
            bad = [*bad, {"slot": int(slots[k]), "index": i, "path": path,
                          "error": f"{type(cause).__name__}: {cause}"}]
        bad.sort(key=lambda r: r["slot"])
        keep = [k for k in range(len(slots)) if k not in drop]
        if not keep:
            return None, None, slots[:0], bad
        x = self.finish([encoded[k] for k in keep], self.device, indices[keep])
        return x, y[keep], slots[keep], bad
