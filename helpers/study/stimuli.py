"""User-study stimuli, per-participant trial lists and the append-only response log (§4.2).

Each stimulus is one basis vector's grid (04_visualize) in two versions: the
true order and the same grid with its columns shuffled (a seeded permutation,
never the identity). The two images are stored as ``images/<id>_a.png`` and
``images/<id>_b.png`` in a random assignment; which one is ordered is written
only to ``answer_key.csv``, kept apart from ``stimuli.csv`` (what participants
may see). A participant's trial list — order of stimuli and which image goes
on top — is drawn from a generator seeded by the participant code and the
profile seed, so it is the same every time the code is entered.

Responses are JSON lines in ``responses/human/<code>.jsonl`` (machine
observers: ``responses/machine/<name>.jsonl``), one line per answered trial,
written with one ``write`` and fsynced before the next trial is shown.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..grids.visualize import GRIDS_MADE_BY, grid_path
from ..models.language import images_only
from ..pipeline import costs, keys, provenance, store

MADE_BY = "06_user_study (python -m helpers.run --only 06)"



GAP = 2
"""Pixels between the columns of a grid (``visualize.patch_grid``'s default)."""


CODE = re.compile(r"[A-Za-z0-9_-]{1,40}")


FIELDS = {
    "participant": str, "observer": str, "trial": int, "n_trials": int, "stimulus_id": str,
    "layer": str, "basis": str, "component": int, "ordered_position": str, "choice": str,
    "correct": bool, "rt_ms": float, "timestamp": str, "input": str, "stimuli_hash": str,
}
"""Fields of a response record and their JSON types, in the order they are written."""


def _rng(*keys) -> np.random.Generator:
    """A generator seeded by a hash of ``keys`` (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def column_boxes(width: int, m: int, gap: int = GAP) -> list[slice]:
    """Horizontal slices of the ``m`` columns of a grid ``width`` pixels wide."""
    step, rest = divmod(width + gap, m)
    if rest or step <= gap:
        raise ValueError(f"a grid {width} px wide does not split into m={m} columns with "
                         f"gap={gap}; check n_targets against the grids of 04_visualize.")
    return [slice(j * step, j * step + step - gap) for j in range(m)]


def shuffle_columns(image: np.ndarray, m: int, rng: np.random.Generator, gap: int = GAP):
    """The grid with its ``m`` columns in a random order that is never the identity.

    Returns ``(shuffled image, permutation)``: column ``j`` of the result is
    column ``permutation[j]`` of ``image``.
    """
    if m < 2:
        raise ValueError(f"n_targets={m}: a grid needs at least 2 columns to be shuffled.")
    perm = np.arange(m)
    while (perm == np.arange(m)).all():
        perm = rng.permutation(m)
    boxes = column_boxes(image.shape[1], m, gap)
    out = image.copy()
    for j, src in enumerate(perm):
        out[:, boxes[j]] = image[:, boxes[src]]
    return out, perm


def stimuli_key(p) -> dict:
    """What profile ``p``'s stimuli are made from: the study settings and the grids (their content hash).

    The one key of the stimuli (:func:`make_stimuli` and provenance call it).
    """
    grids = provenance.require(p, "grids")
    need = max(p.n_show, p.n_study)
    if grids["params"]["n_grids"] < p.n_study or not set(p.layers) <= set(grids["params"]["layers"]):
        raise store.StaleArtifactError(
            f"{p.artifact('grids')} holds {grids['params']['n_grids']} grids per basis for layers "
            f"{grids['params']['layers']}; the study needs {p.n_study} for {list(p.layers)}. "
            f"Rerun {GRIDS_MADE_BY} (it saves the top max(n_show, n_study) = {need}).")
    return provenance.key(__name__, {"layers": list(p.layers), "n_study": p.n_study, "n_targets": p.n_targets,
                                     "seed": p.seed}, {"grids": grids["hash"]})


def make_stimuli(p) -> dict:
    """Write the stimuli artifact from the saved grids (once; reused while current).

    Refuses to replace stimuli that human participants have answered: their
    logs would no longer match.

    Returns the artifact's sidecar (``hash`` identifies the stimulus set).
    """
    folder, key = p.artifact("stimuli"), stimuli_key(p)
    answered = sorted((p.artifact("responses") / "human").glob("*.jsonl"))
    if answered and (folder / store.META).exists():
        try:
            problem = "; ".join(keys.differences(store.read_meta(folder, made_by=MADE_BY), key))
        except store.CorruptArtifactError as e:
            problem = str(e)
        if problem:
            raise store.StaleArtifactError(
                f"{folder} was made from {problem}, and {len(answered)} participant log(s) in "
                f"{answered[0].parent} answered it. Move those logs aside (they belong to the old stimuli) "
                f"before making new stimuli, or rerun with the old settings.")
    with store.Build(folder, key, MADE_BY, profile=p.name, resumable=False) as b:
        if b.current:
            return b.meta
        return _write_stimuli(p, b)


def _write_stimuli(p, b) -> dict:
    partial = b.partial
    (partial / "images").mkdir(exist_ok=True)
    rows, key = [], []
    for layer in p.layers:
        for basis in p.bases:
            for j in range(p.n_study):
                path = grid_path(p.artifact("grids"), layer, basis, j)
                if not path.exists():
                    break  # the layer has fewer than n_study dimensions
                sid = f"{layer}-{basis}-{j + 1:02d}"
                ordered = np.asarray(Image.open(path))
                shuffled, perm = shuffle_columns(ordered, p.n_targets, _rng(p.seed, "columns", sid))
                first = "a" if _rng(p.seed, "files", sid).random() < 0.5 else "b"
                images = {first: ordered, ("b" if first == "a" else "a"): shuffled}
                for side, image in images.items():
                    with store.atomic(partial / "images" / f"{sid}_{side}.png") as tmp:
                        Image.fromarray(image).save(tmp, format="PNG")
                rows.append({"stimulus_id": sid, "layer": layer, "basis": basis, "component": j + 1,
                             "image_a": f"images/{sid}_a.png", "image_b": f"images/{sid}_b.png",
                             "identical": bool((ordered == shuffled).all())})
                key.append({"stimulus_id": sid, "ordered": first, "permutation": " ".join(map(str, perm))})
    for name, table in (("stimuli.csv", rows), ("answer_key.csv", key)):
        with store.atomic(partial / name) as tmp:
            pd.DataFrame(table).to_csv(tmp, index=False)
    files = ["stimuli.csv", "answer_key.csv"] + [f"images/{r['stimulus_id']}_{s}.png" for r in rows for s in "ab"]
    return b.commit(files, extra={"n_stimuli": len(rows)})


def load_stimuli(folder, key: dict | None = None):
    """Read the study's stimuli with their answer key.

    Parameters
    ----------
    folder : path
        The stimuli artifact (``data/<profile>/stimuli``).
    key : dict, optional
        The key the stimuli must have (``provenance``); None: unchecked.

    Returns
    -------
    stimuli : DataFrame
        One row per stimulus in ``stimuli.csv`` order: its columns plus
        ``ordered`` and ``permutation`` from ``answer_key.csv``.
    stimuli_hash : str
        The artifact's content hash, which every response record must carry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no stimuli at {folder}; run {MADE_BY} first to make them.")
    meta = store.read_meta(folder, key, MADE_BY)
    tables = []
    for name in ("stimuli.csv", "answer_key.csv"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing; delete {folder} and rerun {MADE_BY}.")
        tables.append(pd.read_csv(folder / name, dtype={"stimulus_id": str, "layer": str, "basis": str}))
    stimuli = tables[0].merge(tables[1], on="stimulus_id", how="left", validate="one_to_one")
    if stimuli["ordered"].isna().any():
        raise ValueError(f"{folder / 'answer_key.csv'} lacks stimuli; delete {folder} and rerun {MADE_BY}.")
    return stimuli, meta["hash"]


def check_code(code: str) -> str:
    """A participant code: 1–40 letters, digits, ``_`` or ``-`` (pseudonymous, a file name)."""
    code = str(code).strip()
    if not CODE.fullmatch(code):
        raise ValueError(f"participant code {code!r} is not valid; use 1–40 letters, digits, "
                         "'_' or '-' (a pseudonym, never a name).")
    return code


def trial_list(stimuli: pd.DataFrame, participant: str, seed: int = 0) -> list[dict]:
    """A participant's trials: every stimulus once, in random order, ordered grid top or bottom.

    Seeded by ``participant`` and ``seed``: the same code gives the same list.
    Returns dicts with ``trial`` (1-based), ``stimulus_id``, ``top``/``bottom``
    (image paths) and ``ordered_position`` ("top"|"bottom").
    """
    rng = _rng(seed, "trials", check_code(participant))
    order = rng.permutation(len(stimuli))
    flips = rng.random(len(stimuli)) < 0.5
    trials = []
    for n, (i, flip) in enumerate(zip(order, flips), start=1):
        s = stimuli.iloc[i]
        top, bottom = ("b", "a") if flip else ("a", "b")
        trials.append({"trial": n, "stimulus_id": s.stimulus_id,
                       "top": s[f"image_{top}"], "bottom": s[f"image_{bottom}"],
                       "ordered_position": "top" if s.ordered == top else "bottom",
                       "layer": s.layer, "basis": s.basis, "component": int(s.component)})
    return trials


class ResponseLog:
    """One participant's append-only JSON-lines log.

    :meth:`append` writes a record with a single ``write`` to a file opened
    with ``O_APPEND`` and fsyncs it before returning, under an exclusive
    ``flock``, refusing a trial already in the file (two windows with one
    code). A process killed mid-write can leave a torn last line without a
    newline; :meth:`repair` moves it to ``<log>.torn`` and truncates it away.
    """

    def __init__(self, path):
        self.path = Path(path)

    def records(self) -> list[dict]:
        """The complete records (a torn last line is left out; see :meth:`repair`)."""
        if not self.path.exists():
            return []
        text = self.path.read_text()
        lines = text.split("\n")
        complete = lines[:-1]  # after the last newline: empty or torn
        return [json.loads(line) for line in complete if line.strip()]

    def answered(self) -> set[int]:
        """Trial numbers already in the log."""
        return {int(r["trial"]) for r in self.records()}

    def repair(self) -> bool:
        """Cut a torn last line (kept in ``<log>.torn``); True when there was one."""
        if not self.path.exists():
            return False
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            return False
        with open(self.path.with_name(self.path.name + ".torn"), "ab") as f:
            f.write(data[cut:] + b"\n")
        warnings.warn(f"{self.path}: an interrupted write left a torn last line; it was moved "
                      f"to {self.path.name}.torn and that trial will be asked again.")
        with open(self.path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        return True

    def append(self, record: dict) -> bool:
        """Append one record durably; False (nothing written) if its trial is already logged."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({k: record[k] for k in FIELDS}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if int(record["trial"]) in self.answered():
                return False
            os.write(fd, line)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # closing releases the lock


def response(trial: dict, participant: str, observer: str, n_trials: int, choice: str,
             rt_ms: float, source: str, stimuli_hash: str) -> dict:
    """The record of one answered trial (fields: :data:`FIELDS`)."""
    import datetime

    if choice not in ("top", "bottom"):
        raise ValueError(f"choice={choice!r}; use 'top' or 'bottom'.")
    return {"participant": participant, "observer": observer, "trial": trial["trial"],
            "n_trials": n_trials, "stimulus_id": trial["stimulus_id"], "layer": trial["layer"],
            "basis": trial["basis"], "component": trial["component"],
            "ordered_position": trial["ordered_position"], "choice": choice,
            "correct": choice == trial["ordered_position"], "rt_ms": round(float(rt_ms), 1),
            "timestamp": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
            "input": source, "stimuli_hash": stimuli_hash}


def resume_point(log: ResponseLog, trials: list[dict], stimuli_hash: str) -> int:
    """Index into ``trials`` of the first unanswered trial, checking the log belongs to them.

    Raises
    ------
    store.StaleArtifactError
        When the log answered another stimulus set or another trial order.
    """
    log.repair()
    by_trial = {t["trial"]: t for t in trials}
    for r in log.records():
        t = by_trial.get(int(r["trial"]))
        if r.get("stimuli_hash") != stimuli_hash or t is None or t["stimulus_id"] != r.get("stimulus_id"):
            raise store.StaleArtifactError(
                f"{log.path} was answered on other stimuli (trial {r.get('trial')}: "
                f"{r.get('stimulus_id')}). Use another participant code, or move that log aside.")
    done = log.answered()
    return next((i for i, t in enumerate(trials) if t["trial"] not in done), len(trials))


def _cost(p, scale) -> costs.Cost:
    """Two PNGs (ordered, columns shuffled) per studied vector of every basis and layer, and two CSVs."""
    from ..bases.kinds import vectors
    from ..grids.visualize import grid_shape

    n = sum(min(p.n_study, max(p.n_show, p.n_study), k) for layer in p.layers for k in vectors(p, scale, layer).values())
    return costs.Cost(disk=n * (2 * costs.png_bytes(*grid_shape(p, scale)) + 160) + 4096)


STEP = provenance.declare(
    __name__, "06_user_study", "stimuli", key=stimuli_key, reads=("grids",), build=make_stimuli,
    settings=("layers", "n_study", "n_targets", "seed"), uses=("model",),
    outputs=(provenance.Output("fig14_study_trial"),), cost=_cost, **images_only())
