"""Executing notebooks: the kernels' environment (this checkout first on the path, the lock and restart
settings), ``-p name=value`` parsing, and why a kernel died."""
from __future__ import annotations

import ast
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .locks import WAIT_ENV
from .settings import ROOT
from .store import RESTART_ENV

ROOT_ENV = "HELPERS_ROOT"


def parse_value(text: str):
    """A ``-p`` value as a Python literal when it is one (``3``, ``None``, ``[1, 2]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameters(pairs) -> dict:
    """``["seed=1", "layers=conv1,fc1"]`` -> ``{"seed": 1, "layers": "conv1,fc1"}``."""
    params = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p {pair!r} is not key=value; write e.g. -p seed=1.")
        params[key.strip()] = parse_value(value.strip())
    return params


QUIET = ["--IPKernelApp.log_level=ERROR"]
"""Kernel arguments: no startup warnings per notebook (the kernel listens on 127.0.0.1, jupyter_client's
default, and says so at WARNING level each time); errors still show."""


def kernel_variables(wait: bool = True, restart: bool = False) -> dict:
    """Environment for notebook kernels: this checkout first on the path (and named), lock and restart policy."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            ROOT_ENV: str(ROOT), WAIT_ENV: "1" if wait else "0", RESTART_ENV: "1" if restart else "0"}


@contextmanager
def kernel_environment(wait: bool, restart: bool):
    """:func:`kernel_variables` set while the kernels of a run start (they inherit them)."""
    with environment(kernel_variables(wait, restart)):
        yield


@contextmanager
def environment(new: dict):
    """The variables ``new`` set in ``os.environ`` inside the block (for the processes it starts), then restored."""
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _oom_kills() -> int:
    """Processes the out-of-memory killer ended in this container so far (cgroup v2 or v1), or -1."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return -1


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return -1


def diagnose(data_path: Path, oom_before: int) -> str:
    """The likely cause of a kernel's death that can be seen from here: a full disk, the OOM killer."""
    folder = Path(data_path)
    while not folder.exists():
        folder = folder.parent
    disk = shutil.disk_usage(folder)
    causes = []
    if disk.free < max(256 * 2**20, disk.total // 100):
        causes.append(f"the disk holding {data_path} is full ({disk.free / 2**20:,.0f} MiB free): free space, "
                      "or set data_dir to a folder on a larger disk")
    oom = _oom_kills()
    if oom_before >= 0 and oom > oom_before:
        causes.append("the out-of-memory killer ended a process meanwhile: the kernel ran out of memory "
                      "(lower batch_size, pca_chunk or index_cap)")
    if causes:
        return "likely cause: " + "; ".join(causes)
    memory = _available_memory()
    return (f"no cause visible from here ({disk.free / 2**30:,.1f} GiB free on its disk, "
            f"{memory / 2**30:,.1f} GiB memory available now)")
