"""On-disk artifacts: ``.npy`` arrays in a folder plus a JSON sidecar ``meta.json``.

Every step writes its artifact into ``<folder>.partial/`` and renames it into
place only when complete, so an interrupted run leaves either the old artifact
or none. The sidecar records the profile, the parameters that produced the
artifact, the package version and a content hash; :func:`read_meta` refuses
an artifact whose parameters differ from what the caller expects.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

META = "meta.json"
PROGRESS = "progress.json"


class StaleArtifactError(ValueError):
    """An artifact on disk was made with other settings than the ones asked for."""


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path) -> dict:
    """Read a JSON file, with a clear error for a corrupt one."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is corrupt ({e}); delete {path.parent} and rerun the step that made it."
        ) from None


def content_hash(folder, names) -> str:
    """SHA-256 over the bytes of ``names`` inside ``folder``, in the given order.

    Reads 16 MiB at a time, so memory is independent of file size.
    """
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _mismatch(found: dict, expected: dict) -> list[str]:
    return [
        f"{k}={found.get(k)!r} (asked: {v!r})"
        for k, v in expected.items()
        if json.loads(json.dumps(found.get(k))) != json.loads(json.dumps(v))
    ]


def read_meta(folder, params: dict | None = None, made_by: str = "its notebook") -> dict:
    """Return the sidecar of a finished artifact, checking its parameters.

    Parameters
    ----------
    folder : path
        The artifact folder.
    params : dict, optional
        Parameters the caller expects; any difference raises.
    made_by : str
        How to (re)make the artifact, for the error messages.

    Raises
    ------
    FileNotFoundError
        When the artifact does not exist (yet).
    StaleArtifactError
        When it was made with other parameters.
    """
    folder = Path(folder)
    if not (folder / META).exists():
        raise FileNotFoundError(f"no artifact at {folder}; make it first with {made_by}.")
    meta = read_json(folder / META)
    bad = _mismatch(meta.get("params", {}), params or {})
    if bad:
        raise StaleArtifactError(
            f"{folder} was made with other settings: {', '.join(bad)}. "
            f"Delete {folder} and rerun {made_by}, or use the settings it was made with."
        )
    return meta


def begin(folder, params: dict, made_by: str = "its notebook") -> tuple[Path, dict]:
    """Open ``<folder>.partial`` for writing, resuming an earlier attempt.

    Returns
    -------
    partial : Path
        The folder to write into.
    progress : dict
        What an earlier, interrupted attempt with the same parameters recorded
        with :func:`save_progress` (empty for a fresh start).

    Raises
    ------
    StaleArtifactError
        When an unfinished attempt with other parameters is in the way; it is
        left untouched.
    """
    partial = Path(str(folder) + ".partial")
    if (partial / PROGRESS).exists():
        progress = read_json(partial / PROGRESS)
        bad = _mismatch(progress.get("params", {}), params)
        if bad:
            raise StaleArtifactError(
                f"{partial} holds an unfinished run with other settings: {', '.join(bad)}. "
                f"Delete it to start over, or resume it with those settings ({made_by})."
            )
        return partial, progress
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    save_progress(partial, params)
    return partial, {"params": params}


def save_progress(partial, params: dict, **state) -> None:
    """Record how far an unfinished artifact got (atomically)."""
    write_json(Path(partial) / PROGRESS, {"params": params, **state})


def commit(partial, folder, params: dict, profile: str, artifact: str, files: list[str],
           extra: dict | None = None) -> dict:
    """Write the sidecar and rename ``partial`` to ``folder`` (replacing an old one).

    ``extra`` adds fields to the sidecar (e.g. a test accuracy). Returns the sidecar dict.
    """
    from . import __version__

    partial, folder = Path(partial), Path(folder)
    meta = {
        "artifact": artifact,
        "profile": profile,
        "params": params,
        "version": __version__,
        "files": {n: list(np.load(partial / n, mmap_mode="r").shape) for n in files if n.endswith(".npy")},
        "hash": content_hash(partial, files),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    write_json(partial / META, meta)
    (partial / PROGRESS).unlink(missing_ok=True)
    if folder.exists():
        old = Path(str(folder) + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old)
    else:
        os.replace(partial, folder)
    return meta


def open_array(folder, name: str) -> np.ndarray:
    """Memory-map ``<folder>/<name>.npy`` read-only, with a clear error if corrupt."""
    path = Path(folder) / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing; delete {folder} and rerun the step that made it."
        ) from None
    except ValueError as e:
        raise ValueError(
            f"{path} is corrupt ({e}); delete {folder} and rerun the step that made it."
        ) from None
