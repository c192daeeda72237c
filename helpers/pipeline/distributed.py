"""One step on several processes: ``torch.distributed`` ranks started by torch elastic, torchrun's own engine.

The calling process (a notebook's kernel, the runner, a script) stays the *driver*:
it holds the artifact's lock, prepares the partial artifact, starts ``nproc``
workers on this machine with :func:`torch.distributed.launcher.api.elastic_launch`
(each is ``python -m helpers.pipeline.distributed <module:function> <job.json>``),
waits for them and finishes the artifact. Each worker rebuilds the profile from
the job file, joins the process group (NCCL on CUDA, gloo on the CPU), takes its
device (``cuda:<local rank>``) and runs the step's rank function, which works on
its :func:`shard` of the images and combines with the others through
:func:`all_sum` and :func:`gather`.

Shards are contiguous runs of whole batches of the one-process run, so every
batch a rank forwards is a batch the one-process run forwards: the results are
the same numbers, whatever ``nproc``.

A rank that fails stops the others (torch elastic terminates the workers of the
group) and the driver raises :class:`RankError` naming the rank, its error and
its traceback (recorded by :func:`torch.distributed.elastic.multiprocessing.errors.record`).

Several machines: run the same command on each, with ``nnodes``, ``node_rank``
and ``rdzv_endpoint`` (torchrun's ``--nnodes``, ``--node-rank`` and
``--rdzv-endpoint``, a static rendezvous at machine 0); ``data_dir`` must be a
folder every machine sees. Machine 0 prepares and finishes the artifact.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from . import store
from .kernels import environment
from .settings import ROOT, load_profile

WORKER = "helpers.pipeline.distributed"


SETTINGS = ("nproc", "nnodes", "node_rank", "rdzv_endpoint")
"""The settings of a step that runs on ranks."""


class RankError(RuntimeError):
    """A worker of a distributed step failed; the message names the rank, its error and its traceback.

    ``pids``: the process ids the workers had (all ended when this is raised)."""

    def __init__(self, message: str, pids: list[int]):
        super().__init__(message)
        self.pids = pids


@dataclasses.dataclass(frozen=True)
class Launched:
    """What a finished launch did: wall seconds, and the workers' process ids (all ended)."""

    seconds: float
    pids: list


@dataclasses.dataclass(frozen=True)
class Ranks:
    """How many processes run a step, and the profile they rebuild.

    Made by :func:`ranks` from a profile's ``nproc``, ``nnodes``, ``node_rank``, ``rdzv_endpoint``.
    """

    p: object
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def world(self) -> int:
        """Processes in all: ``nproc * nnodes``."""
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this machine prepares and finishes the artifact (machine 0)."""
        return self.node_rank == 0

    def launch(self, target, **kwargs) -> "Launched":
        """Run ``target`` (a step's rank function, called as ``target(p, **kwargs)``) on every rank."""
        return launch(target, self, **kwargs)

    def follow(self, target, artifact, expected: dict, made_by: str, timeout: float = 3600.0,
               **kwargs) -> dict:
        """On a machine other than 0: this machine's ranks of ``target`` (unless the artifact is current), then
        the sidecar of ``artifact`` (whose key must be ``expected``) once machine 0 has finished it."""
        try:
            return store.read_meta(artifact, expected, made_by)
        except (store.MissingArtifactError, store.StaleArtifactError, store.CorruptArtifactError):
            pass
        self.launch(target, **kwargs)
        t0 = time.monotonic()
        while True:
            try:
                return store.read_meta(artifact, expected, made_by)
            except (store.MissingArtifactError, store.StaleArtifactError, store.CorruptArtifactError):
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"machine 0 did not finish {artifact} within {timeout:.0f} s after the "
                                       f"ranks ended; look at its output, then rerun {made_by}.") from None
                time.sleep(1.0)


def ranks(p) -> Ranks:
    """The :class:`Ranks` of profile ``p``."""
    return Ranks(p, p.nproc, p.nnodes, p.node_rank, p.rdzv_endpoint)


def _device(device=None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _check_devices(r: Ranks) -> str:
    """The backend: NCCL when the profile's device is CUDA (one GPU per process), else gloo."""
    if _device(r.p.device).type != "cuda":
        return "gloo"
    if r.nproc > torch.cuda.device_count():
        raise ValueError(f"setting nproc={r.nproc} is not valid here: this machine has {torch.cuda.device_count()} "
                         "GPU(s) and each process takes one; use nproc <= that, or device='cpu'.")
    return "nccl"


def _jobs_folder(p) -> Path:
    folder = p.data_path / ".ranks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def target_name(target) -> str:
    """``"module:function"``, how a worker finds a rank function (a module-level function of ``helpers``)."""
    if isinstance(target, str):
        return target
    name = f"{target.__module__}:{target.__qualname__}"
    if "<" in target.__qualname__ or "." in target.__qualname__:
        raise ValueError(f"rank function {name} is not a module-level function: a worker could not import it.")
    return name


def launch(target, r: Ranks, **kwargs) -> Launched:
    """Start ``r.nproc`` workers here (and join the other machines' through the rendezvous), wait for all;
    each calls ``target(p, **kwargs)`` (a module-level function, or its ``"module:function"`` name).

    Raises
    ------
    RankError
        When a worker fails: the first failure's rank, error and traceback. The other workers are
        stopped by torch elastic before this returns; none is left running.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    backend, target = _check_devices(r), target_name(target)
    job = _jobs_folder(r.p) / f"{target.replace(':', '.')}-{uuid.uuid4().hex[:8]}"
    job.mkdir()
    spec = {"target": target, "backend": backend, "profile": _profile_fields(r.p), "kwargs": kwargs}
    (job / "job.json").write_text(json.dumps(spec, default=str))
    if r.nnodes > 1:
        config = LaunchConfig(min_nodes=r.nnodes, max_nodes=r.nnodes, nproc_per_node=r.nproc,
                              rdzv_backend="static", rdzv_endpoint=r.rdzv_endpoint,
                              rdzv_configs={"rank": r.node_rank}, run_id=f"helpers-{target}",
                              max_restarts=0, monitor_interval=0.1, start_method="spawn")
    else:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=r.nproc, rdzv_backend="c10d",
                              rdzv_endpoint="localhost:0", run_id=uuid.uuid4().hex, max_restarts=0,
                              monitor_interval=0.1, start_method="spawn")
    threads = max(1, (os.cpu_count() or 1) // r.nproc) if backend == "gloo" else 1
    where = f" on each of {r.nnodes} machines (this is machine {r.node_rank})" if r.nnodes > 1 else ""
    store.say(f"{target}: {r.nproc} ranks ({backend}){where}")
    t0 = time.perf_counter()
    try:
        with environment({"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                          "OMP_NUM_THREADS": str(threads)}):
            elastic_launch(config, sys.executable)("-m", WORKER, str(job / "job.json"))
    except ChildFailedError as e:
        rank, failure = min(e.failures.items(), key=lambda kv: kv[1].timestamp)
        raise RankError(_describe(target, rank, failure, r.world), _pids(job)) from None
    finally:
        pids = _pids(job)
        shutil.rmtree(job, ignore_errors=True)
    seconds = time.perf_counter() - t0
    store.say(f"{target}: {r.world} ranks done in {seconds:.1f} s")
    return Launched(seconds, pids)


def _pids(job: Path) -> list[int]:
    return sorted(int(f.read_text()) for f in job.glob("pid-*") if f.read_text().strip())


def _describe(target: str, rank: int, failure, world: int) -> str:
    """``rank 1 of 2 failed in helpers.sampling:...: <error>`` and the rank's traceback where it recorded one."""
    data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
    message = data.get("message", {})
    if isinstance(message, dict):
        text = message.get("message", "")
        trace = message.get("extraInfo", {}).get("py_callstack", "")
    else:
        text, trace = str(message), ""
    if failure.exitcode < 0:  # killed: no error file, whatever torch elastic put in its place
        import signal

        number = -failure.exitcode
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else "unknown"
        text, trace = f"it was killed by signal {number} ({name})", ""
    elif not text:
        text = f"it exited with code {failure.exitcode}"
    out = f"rank {rank} of {world} failed in {target}: {text.strip()}"
    return out + (f"\n\nrank {rank}'s traceback:\n{trace.rstrip()}" if trace else "")


def _profile_fields(p) -> dict:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


def _profile(fields: dict):
    fields = dict(fields)
    return load_profile(fields.pop("name"), **fields)


# -- inside a worker ---------------------------------------------------------------------------------------------
def rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(n: int, batch_size: int) -> tuple[int, int]:
    """This rank's slots ``[lo, hi)`` of ``n``: a contiguous run of whole batches of ``batch_size``.

    The ``ceil(n / batch_size)`` batches of the one-process run are split into
    world-size contiguous runs as evenly as possible (``numpy.array_split``); outside
    a process group the whole range.
    """
    r, world = rank()
    if world == 1:
        return 0, n
    batches = np.array_split(np.arange(-(-n // batch_size)), world)[r]
    if len(batches) == 0:
        return n, n
    return int(batches[0]) * batch_size, min(n, (int(batches[-1]) + 1) * batch_size)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, in place (integers stay exact); itself outside a process group."""
    if rank()[1] > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def gather(obj) -> list:
    """``obj`` of every rank, in rank order (any picklable object); ``[obj]`` outside a process group."""
    if rank()[1] == 1:
        return [obj]
    out = [None] * rank()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def same_key(mine: dict, driver: dict, what: str) -> None:
    """Stop a rank whose rebuilt key (``mine``) is not the driver's, naming the difference; ``what`` names the
    artifact (``"sample"``)."""
    from .keys import differences

    diffs = differences(mine, driver, exact=True)
    if diffs:
        raise ValueError(f"this rank rebuilt another {what} than the driver's ({'; '.join(diffs)}): a distributed "
                         f"{what} is made from the profile's own model, images and settings (ranks.p).")


def device(device=None) -> torch.device:
    """This rank's device: ``cuda:<local rank>`` when ``device`` is CUDA, else ``device``."""
    d = _device(device)
    if d.type == "cuda" and "LOCAL_RANK" in os.environ and rank()[1] > 1:
        d = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(d)
    return d


def main(argv=None) -> None:
    """A worker: ``python -m helpers.pipeline.distributed <job.json>`` (started by :func:`launch`)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    @record
    def work(path):
        spec = json.loads(Path(path).read_text())
        (Path(path).parent / f"pid-{os.environ.get('RANK', 0)}").write_text(str(os.getpid()))
        module, name = spec["target"].split(":")
        fn = getattr(importlib.import_module(module), name)
        p = _profile(spec["profile"])
        torch.distributed.init_process_group(spec["backend"])
        try:
            fn(p, **spec["kwargs"])
        finally:
            torch.distributed.destroy_process_group()

    work(*(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
