"""On-disk artifacts: files in a folder plus a JSON sidecar ``meta.json`` saying what made them.

The sidecar records the artifact's *key* — ``params`` (the settings that shape
it), ``inputs`` (the images it read, the model, the content hash of every
upstream artifact) and ``code`` (a digest of the modules that compute it) —
and, per file, its size, modification time and SHA-256, plus one hash over all
files. Reading an artifact checks its key against the one the caller expects
(:class:`StaleArtifactError` names what differs) and its files cheaply: sizes,
and the SHA-256 of any file whose modification time changed
(:class:`CorruptArtifactError`). :func:`verify` hashes everything.

Writing goes through :class:`Build`: it takes the artifact's lock (one writer
at a time, see :mod:`helpers.pipeline.locks`), reuses a finished artifact whose key
matches, and otherwise writes into ``<folder>.partial/``, renamed into place by
:meth:`Build.commit`; an interrupted build resumes from the progress it saved.
Files are written under temporary names and renamed (:func:`atomic`), so no
finished file is ever rewritten in place.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .keys import differences
from .locks import Lock, lock_path

log = logging.getLogger(__name__)


META = "meta.json"


PROGRESS = "progress.json"


RESTART_ENV = "HELPERS_RESTART"


class StaleArtifactError(ValueError):
    """An artifact was made from other settings, images, model, code or upstream artifacts."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class CorruptArtifactError(ValueError):
    """An artifact's files are missing, truncated or differ from what its sidecar recorded."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class MissingArtifactError(FileNotFoundError):
    """An artifact does not exist (yet)."""


def say(text: str) -> None:
    """Tell the user (stderr: shown by notebooks and the runner alike) and log it."""
    print(text, file=sys.stderr, flush=True)
    log.info(text)


# -- files -------------------------------------------------------------------
def write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def read_json(path, made_by: str = "the step that made it") -> dict:
    """Read a JSON file, with a clear error for a corrupt one."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptArtifactError(f"{path} is corrupt ({e}); delete {path.parent} and rerun {made_by}.") from None


@contextmanager
def atomic(path):
    """Yield a temporary name beside ``path``; on success it is renamed to ``path``, else removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path, fields, rows) -> None:
    """Write ``rows`` (dicts) with columns ``fields`` as a CSV file: under a temporary name, fsynced, then
    renamed into place, so a crash never leaves half a table."""
    import csv

    with atomic(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())


def file_sha256(path) -> str:
    """SHA-256 of a file, read 16 MiB at a time (memory independent of its size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _record(path: Path) -> dict:
    st = path.stat()
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
    if path.suffix == ".npy":
        rec["shape"] = list(np.load(path, mmap_mode="r").shape)
    return rec


def _combined(files: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return "sha256:" + h.hexdigest()


def new_array(path, shape, dtype=np.float32) -> np.memmap:
    """A ``.npy`` memory map with its disk space reserved now.

    A memory map over a sparse file kills the process (SIGBUS) when the disk
    fills; reserving the space first turns that into a clear error here.
    """
    path = Path(path)
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape)).flush()  # header; sparse
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise OSError(e.errno, f"not enough disk space for {path}: it needs {size / 2**20:,.0f} MiB and "
                               f"{free / 2**20:,.0f} MiB are free. Free some space, or set data_dir to a "
                               "folder on a larger disk, and rerun.") from None
    return np.load(path, mmap_mode="r+")


# -- reading -----------------------------------------------------------------
def _corrupt(folder, made_by, what) -> CorruptArtifactError:
    return CorruptArtifactError(f"{what}; delete {folder} and rerun {made_by}.", what)


def check_files(folder, meta: dict, made_by: str, full: bool = False) -> None:
    """Check an artifact's files against its sidecar: sizes, and hashes where mtimes changed (all if ``full``)."""
    folder = Path(folder)
    refreshed = {}
    for name, rec in meta.get("files", {}).items():
        if not isinstance(rec, dict):
            raise _corrupt(folder, made_by, f"{folder / META} records no sizes or hashes (an older format)")
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _corrupt(folder, made_by, f"{path} is missing") from None
        if st.st_size != rec["size"]:
            raise _corrupt(folder, made_by, f"{path} is corrupt ({st.st_size} bytes, the sidecar says {rec['size']})")
        if full or st.st_mtime_ns != rec["mtime_ns"]:
            if file_sha256(path) != rec["sha256"]:
                raise _corrupt(folder, made_by, f"{path} is corrupt: it was modified after it was made "
                                                "(its SHA-256 differs from the sidecar's)")
            if st.st_mtime_ns != rec["mtime_ns"]:
                refreshed[name] = st.st_mtime_ns
    if refreshed:  # same bytes, new time (a copy): remember, so the next open need not hash again
        lock = Lock(lock_path(folder), str(folder), wait=False)
        try:
            with lock:
                fresh = read_json(folder / META, made_by)
                for name, mtime in refreshed.items():
                    fresh["files"][name]["mtime_ns"] = mtime
                write_json(folder / META, fresh)
        except (OSError, RuntimeError):
            pass  # busy or read-only: hash again next time


def read_meta(folder, key: dict | None = None, made_by: str = "its notebook", check: bool = True) -> dict:
    """Return the sidecar of a finished artifact, checking it.

    Parameters
    ----------
    folder : path
        The artifact folder.
    key : dict, optional
        The key the caller expects (:func:`key`); any difference raises.
    made_by : str
        How to (re)make the artifact, for the error messages.
    check : bool
        Check the files' sizes (and hashes where their mtimes changed).

    Raises
    ------
    MissingArtifactError
        When the artifact does not exist (yet).
    StaleArtifactError
        When its key differs from ``key``, naming every difference.
    CorruptArtifactError
        When its sidecar or files are damaged.
    """
    folder = Path(folder)
    if not (folder / META).exists():
        raise MissingArtifactError(f"no artifact at {folder}; make it first with {made_by}.")
    meta = read_json(folder / META, made_by)
    if check:
        check_files(folder, meta, made_by)
    if key is not None:
        diffs = differences(meta, key)
        if diffs:
            raise StaleArtifactError(f"{folder} is stale: it was made from {'; '.join(diffs)}. "
                                     f"Rerun {made_by}.", f"it was made from {'; '.join(diffs)}")
    return meta


def verify(folder, made_by: str = "its notebook") -> dict:
    """Hash every file of an artifact against its sidecar (raises like :func:`read_meta`)."""
    meta = read_meta(folder, made_by=made_by, check=False)
    check_files(folder, meta, made_by, full=True)
    return meta


def open_array(folder, name: str, made_by: str = "the step that made it") -> np.ndarray:
    """Memory-map ``<folder>/<name>.npy`` read-only, with a clear error if corrupt."""
    path = Path(folder) / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise _corrupt(folder, made_by, f"{path} is missing") from None
    except (ValueError, OSError, EOFError) as e:
        raise _corrupt(folder, made_by, f"{path} is corrupt ({e})") from None


# -- writing -----------------------------------------------------------------
class Build:
    """Make (or reuse) one artifact: ``with Build(folder, key, made_by) as b: ...``.

    On entry it takes the artifact's lock (waiting for, or refusing, another
    writer), then either finds the finished artifact current (``b.current``,
    ``b.meta``) or opens ``<folder>.partial`` for writing. An unfinished
    partial with the same key is resumed (``b.progress``) when ``resumable``.
    One with another key is set aside into ``<data>/.set-aside/`` (kept, and
    named), unless it holds work worth keeping (a ``summary`` was saved with
    the progress): then the build stops with a message saying how to resume
    or discard it. ``restart`` (or ``HELPERS_RESTART=1``, the runner's
    ``--restart``) discards any unfinished partial instead. With
    ``skip_bad=False`` a current artifact that left unreadable images out
    (``bad_images`` in its sidecar) is refused.
    """

    def __init__(self, folder, key: dict, made_by: str = "its notebook", *, profile: str = "",
                 resumable: bool = True, wait: bool | None = None, restart: bool | None = None,
                 skip_bad: bool | None = None):
        self.folder, self.key, self.made_by, self.skip_bad = Path(folder), key, made_by, skip_bad
        self.partial = Path(str(self.folder) + ".partial")
        self.profile, self.resumable = profile, resumable
        self.restart = os.environ.get(RESTART_ENV) == "1" if restart is None else restart
        self.lock = Lock(lock_path(self.folder), str(self.folder), wait)
        self.current, self.meta, self.progress = False, None, {}

    def __enter__(self) -> "Build":
        self.lock.acquire()
        try:
            if (self.folder / META).exists():
                try:
                    self.meta = read_meta(self.folder, self.key, self.made_by)
                except (StaleArtifactError, CorruptArtifactError) as e:
                    say(f"remaking {self.folder}: {e.reason}")
                else:
                    self.current = True
                    self._refuse_skipped()
                    return self
            self._open_partial()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def _refuse_skipped(self) -> None:
        """A current artifact made with unreadable images left out serves only while skipping is on."""
        bad = self.meta.get("bad_images")
        if bad and self.skip_bad is False:
            raise StaleArtifactError(
                f"{self.folder} was made with {len(bad)} unreadable image(s) left out (e.g. {bad[0]['path']}), "
                f"but skip_bad_images is off. Set skip_bad_images=True to use it, or repair the images, "
                f"delete {self.folder} and rerun {self.made_by}.")

    def _open_partial(self) -> None:
        partial = self.partial
        if partial.exists():
            try:
                progress = read_json(partial / PROGRESS) if (partial / PROGRESS).exists() else None
            except CorruptArtifactError:
                progress = None
            same = progress is not None and not differences(progress.get("key", {}), self.key, exact=True)
            if self.restart:
                shutil.rmtree(partial)
                say(f"discarded the unfinished {partial} (--restart)")
            elif same and self.resumable:
                self.progress = progress
                if progress.get("summary"):
                    say(f"resuming {partial}: {progress['summary']} done")
                return
            elif same:
                shutil.rmtree(partial)  # nothing resumable, and made with these very settings
            elif progress and progress.get("summary"):
                diffs = "; ".join(differences(progress.get("key", {}), self.key, exact=True))
                raise StaleArtifactError(
                    f"{partial} holds unfinished work ({progress['summary']}) made with other settings: "
                    f"{diffs}. To resume it, rerun with the settings it was started with; to discard it, "
                    f"rerun with --restart (python -m helpers.run ... --restart), or delete {partial}.")
            else:
                aside = self.folder.parent / ".set-aside" / f"{partial.name}-{time.strftime('%Y%m%dT%H%M%S')}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, aside)
                say(f"set aside the unfinished {partial} (made with other settings) as {aside}")
        partial.mkdir(parents=True)
        self.save_progress()

    def reload_progress(self) -> dict:
        """Read the progress saved in the partial (by this process or by the ranks of a distributed step)."""
        path = self.partial / PROGRESS
        self.progress = read_json(path, self.made_by) if path.exists() else {}
        return self.progress

    def save_progress(self, summary: str | None = None, **state) -> None:
        """Record how far the build got (atomically); ``summary`` marks work worth resuming."""
        self.progress = {"key": self.key, "summary": summary, **state}
        write_json(self.partial / PROGRESS, self.progress)

    def commit(self, files, extra: dict | None = None) -> dict:
        """Write the sidecar and rename the partial into place (replacing an old artifact)."""
        from .. import __version__

        records = {name: _record(self.partial / name) for name in files}
        meta = {"artifact": self.folder.name, "profile": self.profile, **self.key, "version": __version__,
                "files": records, "hash": _combined(records), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {})}
        write_json(self.partial / META, meta)
        (self.partial / PROGRESS).unlink(missing_ok=True)
        if self.folder.exists():
            old = Path(f"{self.folder}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.folder, old)
            os.replace(self.partial, self.folder)
            shutil.rmtree(old)
        else:
            os.replace(self.partial, self.folder)
        self.meta, self.current = meta, True
        return meta
