"""The user study's answers, read and checked: the app's and the machine observers' logs, the web study's files.

Logs are JSON lines, one file per participant, under ``responses/human/`` (the
Voila app) and ``responses/machine/``; the web study's data files (jsPsych,
JATOS, Pavlovia; :mod:`helpers.study.exports`) go under ``responses/web/``.
:func:`load_responses` checks every answer against the stimuli and refuses what
it cannot trust, naming file, line and fix.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from . import exports
from .stimuli import CODE as PARTICIPANT
from .stimuli import FIELDS, MADE_BY, trial_list

OBSERVERS = ("human", "machine")


BASES = ("pca", "neuron", "ica", "nmf", "sae", "random")  # the order of helpers.bases.KINDS


POSITIONS = ("top", "bottom")


INPUTS = ("key", "button", "machine")


SESSION_COLUMNS = ["participant", "observer", "source", "n_answered", "n_trials", "complete", "attention"]
"""``source``: ``app`` (responses/human/), ``web`` (responses/web/) or ``machine``; ``attention``: the web
study's attention checks passed, as ``passed/asked`` (empty where none were asked)."""


class ResponseLogError(ValueError):
    """A response log is malformed, inconsistent or answers other stimuli."""


def _read_lines(path: Path):
    """Yield ``(line number, record)`` of one log; a torn last line gets its own message."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as e:
            if number == len(lines) and not raw.endswith(b"\n"):
                raise ResponseLogError(
                    f"{path}:{number}: the last line is cut off (not valid JSON, no trailing newline): "
                    f"the session was interrupted mid-write. Reopen the study app with the code "
                    f"{path.stem!r} to repair the log and continue, or delete that last line."
                ) from None
            raise ResponseLogError(f"{path}:{number}: not valid JSON ({e}); fix or delete that line.") from None
        if not isinstance(record, dict):
            raise ResponseLogError(f"{path}:{number}: expected a JSON object per line, found {line[:60]!r}.")
        yield number, record


def _has_type(value, kind) -> bool:
    """JSON types: bool is not a number here, and an int counts as a float."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def _check_fields(record: dict, where: str) -> None:
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise ResponseLogError(f"{where}: missing field(s) {missing}; every line needs {list(FIELDS)}.")
    for key, kind in FIELDS.items():
        if not _has_type(record[key], kind):
            raise ResponseLogError(f"{where}: field {key!r} = {record[key]!r} is a "
                                   f"{type(record[key]).__name__}, expected {kind.__name__}.")
    for key, allowed in (("ordered_position", POSITIONS), ("choice", POSITIONS), ("input", INPUTS)):
        if record[key] not in allowed:
            raise ResponseLogError(f"{where}: field {key!r} = {record[key]!r}; expected one of {allowed}.")


def _check_record(record: dict, where: str, path: Path | None, stimuli, stimuli_hash: str) -> None:
    """Raise :class:`ResponseLogError` unless ``record`` is a valid answer to these stimuli.

    ``path`` is the log of an app or machine observer (named after its participant, in its
    observer's folder); None for a row of the web study's data files.
    """
    _check_fields(record, where)
    if path is None:
        if record["observer"] != "human" or not PARTICIPANT.fullmatch(record["participant"]):
            raise ResponseLogError(f"{where}: observer {record['observer']!r}, participant "
                                   f"{record['participant']!r}: the web study's rows are a human's, with a "
                                   "participant id of 1-40 letters, digits, '_' or '-'.")
    else:
        folder = path.parent.name
        if record["participant"] != path.stem:
            raise ResponseLogError(f"{where}: participant {record['participant']!r} differs from the file "
                                   f"name {path.stem!r}; each log holds one participant and is named after them.")
        if record["observer"] != folder:
            raise ResponseLogError(f"{where}: observer {record['observer']!r} in a log under {folder}/; human "
                                   f"and machine answers are kept apart: move the file to "
                                   f"responses/{record['observer']}/ if the record is right.")
    _check_answer(record, where, stimuli, stimuli_hash)


def _check_answer(record: dict, where: str, stimuli, stimuli_hash: str) -> None:
    if record["stimuli_hash"] != stimuli_hash:
        raise ResponseLogError(
            f"{where}: stale log: stimuli_hash {record['stimuli_hash']!r} differs from the current stimuli "
            f"({stimuli_hash!r}), so these answers are about other images. Move the log out of responses/ "
            f"(or restore the stimuli it answered); rerun {MADE_BY} for a new machine log.")
    sid = record["stimulus_id"]
    if sid not in stimuli.index:
        raise ResponseLogError(f"{where}: unknown stimulus_id {sid!r}; it is not in stimuli.csv.")
    for key in ("layer", "basis", "component"):
        if record[key] != stimuli.at[sid, key]:
            raise ResponseLogError(f"{where}: {key} = {record[key]!r} but stimuli.csv gives "
                                   f"{stimuli.at[sid, key]!r} for {sid!r}.")
    if record["n_trials"] != len(stimuli):
        raise ResponseLogError(f"{where}: n_trials = {record['n_trials']} but there are {len(stimuli)} stimuli.")
    if not 1 <= record["trial"] <= record["n_trials"]:
        raise ResponseLogError(f"{where}: trial = {record['trial']} is outside 1..{record['n_trials']}.")
    if record["correct"] != (record["choice"] == record["ordered_position"]):
        raise ResponseLogError(f"{where}: correct = {record['correct']} but choice = {record['choice']!r} "
                               f"and ordered_position = {record['ordered_position']!r}.")


def _read_log(path: Path, stimuli, stimuli_hash: str) -> list[dict]:
    """The validated records of one participant's log."""
    if not PARTICIPANT.fullmatch(path.stem):
        raise ResponseLogError(f"{path}: the file name {path.stem!r} is not a participant code "
                               f"([A-Za-z0-9_-], at most 40 characters); rename the file.")
    records, trials, answered = [], {}, {}
    for number, record in _read_lines(path):
        where = f"{path}:{number}"
        _check_record(record, where, path, stimuli, stimuli_hash)
        for seen, key, what in ((trials, "trial", "trial"), (answered, "stimulus_id", "stimulus")):
            if record[key] in seen:
                raise ResponseLogError(f"{where}: {what} {record[key]!r} was already answered on line "
                                       f"{seen[record[key]]}; a log holds each trial and each stimulus once.")
            seen[record[key]] = number
        records.append(record)
    return records


def _read_web(folder: Path, keyed, stimuli, stimuli_hash: str, seed: int) -> dict[str, dict]:
    """The web study's answers under ``folder``, per participant: ``{"files", "records", "attention"}``.

    Every row is checked as an app log's line is, and against the participant's own trial list
    (the page draws it as :func:`helpers.study.stimuli.trial_list` does). A participant found in
    two files, or a trial answered twice with different answers, is an error naming both; a row
    repeated unchanged (an endpoint that received it twice) is counted once, with a warning.
    """
    found: dict[str, dict] = {}
    repeated = []
    for path in sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")):
        try:
            rows = exports.read(path)
        except exports.ExportError as e:
            raise ResponseLogError(str(e)) from None
        mine: dict[str, dict] = {}
        for where, row in rows:
            participant = row.get("participant")
            entry = mine.setdefault(participant, {"files": [path], "records": {}, "attention": {}, "where": {}})
            if row["task"] == "attention":
                if row.get("check") is None or row.get("asked") not in POSITIONS or row.get("choice") not in POSITIONS \
                        or row.get("passed") != (row.get("choice") == row.get("asked")):
                    raise ResponseLogError(f"{where}: an attention check needs check, asked, choice (top/bottom) "
                                           f"and passed = (choice == asked); found {row!r}.")
                number, store, what = row["check"], entry["attention"], "attention check"
            else:
                record = {k: row.get(k) for k in FIELDS}
                _check_record(record, where, None, keyed, stimuli_hash)
                number, store, what = record["trial"], entry["records"], "trial"
                row = record
            if number in store:
                if store[number] != row:
                    raise ResponseLogError(f"{where}: participant {participant!r} answered {what} "
                                           f"{number} before ({entry['where'][what, number]}) with another answer; a "
                                           f"session answers each trial once: keep the right row.")
                repeated.append(where)
                continue
            store[number], entry["where"][what, number] = row, where
        for participant, entry in mine.items():
            if participant in found:
                raise ResponseLogError(f"participant {participant!r} is in both {found[participant]['files'][0]} and "
                                       f"{path}: the same answers exported twice, or two sessions with one id. "
                                       f"Keep one file (or rename the participant in one) and rerun.")
            found[participant] = entry
    if repeated:
        warnings.warn(f"{len(repeated)} row(s) repeated unchanged, counted once: " + ", ".join(repeated[:5])
                      + (" …" if len(repeated) > 5 else ""), stacklevel=3)
    for participant, entry in found.items():
        trials = {t["trial"]: t for t in trial_list(stimuli, participant, seed)}
        for number, record in entry["records"].items():
            t = trials[number]
            if (record["stimulus_id"], record["ordered_position"]) != (t["stimulus_id"], t["ordered_position"]):
                raise ResponseLogError(
                    f"{entry['where']['trial', number]}: trial {number} of {participant!r} shows {record['stimulus_id']} with "
                    f"the ordered grid {record['ordered_position']}, but the trial list of that participant (seed "
                    f"{seed}) has {t['stimulus_id']}, {t['ordered_position']}: the page was built with another seed "
                    f"or stimuli; analyse it with the settings of its build.json.")
        answered = [r["stimulus_id"] for r in entry["records"].values()]
        if len(set(answered)) != len(answered):
            raise ResponseLogError(f"participant {participant!r} answered a stimulus twice; a session holds each once.")
    return found


def load_responses(responses_dir, stimuli, stimuli_hash: str, include_incomplete: bool = False, *,
                   seed: int | None = None, include_inattentive: bool = False):
    """Read and validate every log under ``responses_dir/{human,machine}/*.jsonl`` and ``responses_dir/web/``.

    Parameters
    ----------
    responses_dir : path
        The responses folder (``data/<profile>/responses``); missing subfolders
        mean no logs of that kind.
    stimuli : DataFrame
        From :func:`helpers.study.load_stimuli`.
    stimuli_hash : str
        From :func:`helpers.study.load_stimuli`; logs made with other stimuli are refused.
    include_incomplete : bool
        Keep the answers of sessions that stopped before their last trial. By
        default they are left out, with a warning naming them.
    seed : int, optional
        The profile seed the web study was built with; needed when
        ``responses_dir/web/`` holds files (each row is checked against its
        participant's trial list).
    include_inattentive : bool
        Keep web sessions that failed an attention check (left out by default,
        with a warning naming them).

    Returns
    -------
    responses : DataFrame
        One row per answered trial; ``layer`` and ``basis`` are categorical in
        the stimuli's layer order and (pca, neuron).
    sessions : DataFrame
        One row per session: participant, observer, source (app, web, machine),
        n_answered, n_trials, complete, attention.

    Raises
    ------
    ResponseLogError
        For any malformed, inconsistent or stale line, naming file and line.
    """
    keyed = stimuli.set_index("stimulus_id")
    records, sessions = [], []
    for observer in OBSERVERS:
        for path in sorted((Path(responses_dir) / observer).glob("*.jsonl")):
            log = _read_log(path, keyed, stimuli_hash)
            records += log
            sessions.append({"participant": path.stem, "observer": observer,
                             "source": "app" if observer == "human" else "machine", "n_answered": len(log),
                             "n_trials": len(stimuli), "complete": len(log) == len(stimuli), "attention": ""})
    web = Path(responses_dir) / "web"
    if web.is_dir() and any(f.is_file() and not f.name.startswith(".") for f in web.rglob("*")):
        if seed is None:
            raise ValueError(f"{web} holds web study data, which is checked against each participant's trial "
                             "list: pass seed= (the profile's seed).")
        app = {s["participant"] for s in sessions if s["source"] == "app"}
        for participant, entry in _read_web(web, keyed, stimuli, stimuli_hash, seed).items():
            if participant in app:
                raise ResponseLogError(f"participant {participant!r} answered in the app (responses/human/"
                                       f"{participant}.jsonl) and on the web ({entry['files'][0]}): one person, "
                                       "one session; keep one of them.")
            log = sorted(entry["records"].values(), key=lambda r: r["trial"])
            checks = entry["attention"].values()
            records += log
            sessions.append({"participant": participant, "observer": "human", "source": "web",
                             "n_answered": len(log), "n_trials": len(stimuli), "complete": len(log) == len(stimuli),
                             "attention": f"{sum(c['passed'] for c in checks)}/{len(checks)}" if checks else ""})
    sessions = pd.DataFrame(sessions, columns=SESSION_COLUMNS)
    responses = pd.DataFrame(records, columns=list(FIELDS))
    dropped = set()
    incomplete = sessions[~sessions["complete"]]
    if len(incomplete) and not include_incomplete:
        warnings.warn("leaving out incomplete session(s) " + ", ".join(
            f"{r.observer}/{r.participant} ({r.n_answered} of {r.n_trials} trials)" for r in incomplete.itertuples())
            + "; pass include_incomplete=True to keep their answers.", stacklevel=2)
        dropped |= set(zip(incomplete["observer"], incomplete["participant"]))
    failed = sessions[[bool(a) and a.split("/")[0] != a.split("/")[1] for a in sessions["attention"]]]
    if len(failed) and not include_inattentive:
        warnings.warn("leaving out session(s) that failed an attention check: " + ", ".join(
            f"{r.participant} ({r.attention} passed)" for r in failed.itertuples())
            + "; pass include_inattentive=True to keep their answers.", stacklevel=2)
        dropped |= set(zip(failed["observer"], failed["participant"]))
    if dropped:
        responses = responses[[key not in dropped for key in zip(responses["observer"], responses["participant"])]]
    layers = list(dict.fromkeys(stimuli["layer"]))
    responses = responses.astype({"layer": pd.CategoricalDtype(layers), "basis": pd.CategoricalDtype(BASES),
                                  "correct": bool})
    return responses.sort_values(["observer", "participant", "trial"]).reset_index(drop=True), sessions
