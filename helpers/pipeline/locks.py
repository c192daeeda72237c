"""One writer at a time: an exclusive file lock per artifact, naming its holder.

A lock is ``fcntl.flock`` on a small file (``<data>/.locks/<artifact>.lock``).
The kernel releases it when the holding process ends, however it ends, so a
crash never leaves a stale lock behind. While held, the file records who holds
it (pid, host, since when, command), so that a second writer can say whom it
waits for. Whether a busy lock is waited for or refused is the caller's choice;
``HELPERS_LOCK_WAIT=0`` in the environment (the runner's ``--no-wait``) makes
refusing the default for every lock taken by this process and its kernels.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

WAIT_ENV = "HELPERS_LOCK_WAIT"


class LockedError(RuntimeError):
    """The lock is held by another process and waiting was not allowed."""


def default_wait() -> bool:
    """Whether to wait for a busy lock: yes, unless ``HELPERS_LOCK_WAIT=0``."""
    return os.environ.get(WAIT_ENV, "1") != "0"


def describe(holder: dict | None) -> str:
    """``"pid 123 on host (since 12:00:01: python -m helpers.run ...)"`` for a holder record."""
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}: "
            f"{holder.get('command', '?')})")


class Lock:
    """An exclusive lock on ``path``, usable as a context manager.

    Parameters
    ----------
    path : path
        The lock file (created, with its folder, when missing).
    what : str
        What the lock protects, for messages (e.g. ``"data/smoke/ablation"``).
    wait : bool, optional
        Wait for a busy lock (printing once whom for) or raise
        :class:`LockedError`; default :func:`default_wait`.
    """

    def __init__(self, path, what: str, wait: bool | None = None, say=None):
        self.path, self.what = Path(path), what
        self.wait = default_wait() if wait is None else wait
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._fd = None

    def holder(self) -> dict | None:
        """The record written by the current holder (None if unreadable)."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe(self.holder())
                if not self.wait:
                    raise LockedError(
                        f"{self.what} is being written by {holder}. Wait for it to finish, or rerun "
                        "without --no-wait to wait automatically.") from None
                self.say(f"waiting for {self.what}: it is being written by {holder}")
                start = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.say(f"{self.what} is free after {time.monotonic() - start:.0f} s; continuing")
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_path(folder) -> Path:
    """The lock file of an artifact folder: ``<parent>/.locks/<name>.lock``."""
    folder = Path(folder)
    return folder.parent / ".locks" / f"{folder.name}.lock"


def busy(path) -> dict | None:
    """The holder record if ``path`` is locked by another process right now, else None."""
    path = Path(path)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return Lock(path, "").holder() or {}
    finally:
        os.close(fd)
    return None
