import numpy as np
import torch

from helpers.models import training
from helpers.pipeline.settings import load_profile


def test_training_gives_the_same_weights_whatever_the_thread_count(tmp_path):
    """Unpinned, 1 and 2 threads (or AVX2 and AVX-512 kernels) train different networks from one seed."""
    p = load_profile("smoke", train_limit=512, n_eval=64)
    a = training.train_pinned(p, tmp_path / "a.pt", threads=1)
    b = training.train_pinned(p, tmp_path / "b.pt", threads=2)
    assert a["test_accuracy"] == b["test_accuracy"] and np.isfinite(a["test_accuracy"])
    assert a["environment"]["MKL_CBWR"] == "AVX2,STRICT" and a["environment"]["mkldnn"] is False
    wa, wb = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in "ab")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
