"""Rank functions for tests/pipeline/test_distributed.py, started as ``python -m helpers.pipeline.distributed``."""
import time

import torch

from helpers.pipeline import distributed


def fail_on_rank_1(p, seconds: float) -> None:
    """Rank 1 raises at once; every other rank would work for ``seconds`` (unless it is stopped)."""
    if distributed.rank()[0] == 1:
        raise ValueError("planted failure on rank 1")
    time.sleep(seconds)


def combine(p, out: str) -> None:
    """Each rank writes what the collectives gave it: its shard of 10 slots in batches of 3, the sum of the
    ranks + 1 and the gathered rank numbers."""
    r, world = distributed.rank()
    total = distributed.all_sum(torch.tensor([r + 1])).item()
    with open(f"{out}/rank{r}.txt", "w") as f:
        f.write(repr((world, distributed.shard(10, 3), total, distributed.gather(r))))
