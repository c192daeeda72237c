"""helpers.verify: every artifact hashed and checked against the profile."""
import os

import numpy as np

from helpers import verify


def test_a_same_size_overwrite_is_found_by_verify(copy, capsys):
    from helpers.pipeline import load_profile

    path = load_profile("smoke", **copy.params).artifact("sample") / "conv1.npy"
    st = path.stat()
    X = np.load(path)
    np.save(path, X[::-1].copy())  # same shape, same size, other rows
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old time
    assert path.stat().st_size == st.st_size
    assert verify.main(["--profile", "smoke", "-p", f"data_dir={copy.data.parent}", "-p", f"bases={copy.params['bases']}"]) == 1
    out = capsys.readouterr().out
    assert "sample        corrupt" in out and "conv1.npy is corrupt: it was modified after it was made" in out
    assert "bases         stale    made from sample, which is corrupt (01_sample remakes it)" in out
    assert "model         good" in out


def test_verify_says_good_for_a_finished_run(smoke, capsys):
    assert verify.main(["--profile", "smoke", "-p", f"data_dir={smoke.data_path.parent}",
                        "-p", f"bases={','.join(smoke.bases)}"]) == 0
    out = capsys.readouterr().out
    assert out.count(" good ") == 9, out
    assert "compositional good" in out
