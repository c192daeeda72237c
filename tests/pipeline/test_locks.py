"""One writer at a time: a second writer waits (naming the first) or fails clearly; a dead holder frees the lock."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers.pipeline import keys, locks, store
from helpers.pipeline.settings import ROOT

KEY = keys.key({"seed": 0}, {}, ())
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from helpers.pipeline import keys
    from helpers.pipeline import store
    folder, ready, seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    with store.Build(folder, keys.key({"seed": 0}, {}, ()), "the holder") as b:
        ready.write_text("1")
        time.sleep(seconds)
        np.save(b.partial / "a.npy", np.arange(3))
        b.commit(["a.npy"])
""")


def _hold(tmp_path, seconds):
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "thing"), str(ready), str(seconds)],
                             cwd=str(ROOT))
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    return child


def test_a_second_writer_fails_clearly_without_waiting_or_waits_and_reuses(tmp_path, capsys):
    child = _hold(tmp_path, 3)
    with pytest.raises(locks.LockedError, match=rf"thing is being written by pid {child.pid} on .*since"):
        with store.Build(tmp_path / "thing", KEY, "the test", wait=False):
            pass
    with store.Build(tmp_path / "thing", KEY, "the test", wait=True) as b:
        assert b.current  # the holder's finished artifact, not a second computation
    assert child.wait() == 0
    err = capsys.readouterr().err
    assert f"waiting for {tmp_path / 'thing'}: it is being written by pid {child.pid}" in err
    np.testing.assert_array_equal(np.load(tmp_path / "thing" / "a.npy"), np.arange(3))


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    child = _hold(tmp_path, 60)
    assert locks.busy(locks.lock_path(tmp_path / "thing"))["pid"] == child.pid
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert locks.busy(locks.lock_path(tmp_path / "thing")) is None
    with store.Build(tmp_path / "thing", KEY, "the test", wait=False) as b:
        assert not b.current and b.partial.exists()  # the dead holder's partial is resumed, not in the way


def test_no_wait_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(locks.WAIT_ENV, "0")
    assert locks.Lock("/tmp/x.lock", "x").wait is False
    monkeypatch.setenv(locks.WAIT_ENV, "1")
    assert locks.Lock("/tmp/x.lock", "x").wait is True
