import ast
import time
from pathlib import Path

import pytest

from helpers.pipeline import distributed, load_profile


@pytest.mark.parametrize("n,batch,world", [(10, 3, 2), (320, 64, 2), (320, 64, 3), (5, 8, 2), (1000, 7, 8), (64, 64, 1)])
def test_shards_are_contiguous_runs_of_whole_batches_covering_every_slot(monkeypatch, n, batch, world):
    spans = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: (r, world))
        spans.append(distributed.shard(n, batch))
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, in rank order
    for lo, hi in spans:
        assert lo == hi or (lo % batch == 0 and (hi % batch == 0 or hi == n))  # whole batches (or none)
    sizes = [-(-(hi - lo) // batch) for lo, hi in spans]
    assert max(sizes) - min(sizes) <= 1  # batches split as evenly as they can be


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_collectives_between_two_gloo_ranks(tmp_path):
    p = load_profile("smoke", data_dir=str(tmp_path / "data"), nproc=2)
    done = distributed.ranks(p).launch("tests.pipeline.rank_targets:combine", out=str(tmp_path))
    got = [ast.literal_eval((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    assert got == [(2, (0, 6), 3, [0, 1]), (2, (6, 10), 3, [0, 1])]
    assert len(done.pids) == 2 and not any(_alive(pid) for pid in done.pids)
    assert not list((p.data_path / ".ranks").iterdir())  # the job's folder is removed


def test_a_failing_rank_is_named_with_its_traceback_and_stops_the_others(tmp_path):
    p = load_profile("smoke", data_dir=str(tmp_path / "data"), nproc=2)
    t0 = time.monotonic()
    with pytest.raises(distributed.RankError) as e:
        distributed.ranks(p).launch("tests.pipeline.rank_targets:fail_on_rank_1", seconds=300)
    elapsed = time.monotonic() - t0
    text = str(e.value)
    assert text.startswith("rank 1 of 2 failed in tests.pipeline.rank_targets:fail_on_rank_1: ValueError: planted")
    assert "rank 1's traceback" in text and 'rank_targets.py", line' in text
    assert elapsed < 120, f"the healthy rank (300 s of work) was not stopped: {elapsed:.0f} s"
    assert len(e.value.pids) == 2 and not any(_alive(pid) for pid in e.value.pids), "a worker outlived the failure"


def test_settings_are_checked_before_anything_starts():
    with pytest.raises(ValueError, match="nproc=0"):
        load_profile("smoke", nproc=0)
    with pytest.raises(ValueError, match="needs rdzv_endpoint"):
        load_profile("smoke", nnodes=2)
    with pytest.raises(ValueError, match="node_rank=2"):
        load_profile("smoke", nnodes=2, node_rank=2, rdzv_endpoint="node0:29500")
    r = distributed.ranks(load_profile("smoke", nproc=4, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500"))
    assert (r.world, r.distributed, r.main) == (8, True, False)


def test_more_processes_than_gpus_is_a_clear_error(tmp_path):
    import torch

    p = load_profile("smoke", data_dir=str(tmp_path), nproc=torch.cuda.device_count() + 1, device="cuda")
    with pytest.raises(ValueError, match=r"nproc=\d+ is not valid here: this machine has \d+ GPU"):
        distributed.ranks(p).launch("tests.pipeline.rank_targets:combine", out=str(tmp_path))
