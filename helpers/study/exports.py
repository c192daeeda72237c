"""The web study's data files as rows: jsPsych's CSV and JSON, JATOS' and an endpoint's JSON lines.

The web study (:mod:`helpers.study.web`) writes one row per answer with
``trial_type = "grid-choice"``: ``task = "trial"`` rows carry the fields of
:data:`helpers.study.stimuli.FIELDS`, ``task = "attention"`` rows the attention
checks' ``check``, ``asked``, ``choice`` and ``passed``. The files that hold them:

- the end page's download and jsPsych's ``data.get().csv()`` (``.csv``; what
  Pavlovia stores for a jsPsych study),
- jsPsych's ``data.get().json()`` (``.json``, an array of rows),
- JATOS' result data and a data endpoint's log (``.jsonl`` / ``.txt``, one JSON
  object per line; JATOS' "Export results → data" of one component).

Rows of other trial types (the consent page, jsPsych's own columns) are
skipped; values are typed here (CSV holds text). Checking the answers against
the stimuli is :mod:`helpers.study.analysis`' job.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .stimuli import FIELDS

SUFFIXES = (".csv", ".json", ".jsonl", ".txt")


TRIAL_TYPE = "grid-choice"


TYPES = {**FIELDS, "task": str, "check": int, "asked": str, "passed": bool}
"""Columns of a web row and their types (``study_id`` and ``session_id``, when present, stay text)."""


KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


class ExportError(ValueError):
    """A file under ``responses/<stimuli id>/web/`` is not the web study's data."""


def _typed(value, kind, where: str, column: str):
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except ValueError:
        raise ExportError(f"{where}: column {column!r} = {value!r} is not {KINDS[kind]}.") from None


def _objects(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ExportError(f"{path}: not a readable CSV file ({e}).") from None
    text = path.read_text(errors="replace")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ExportError(f"{path}: not valid JSON ({e}); jsPsych's .json() export is an array of rows.") from None
        data = data if isinstance(data, list) else [data]
    else:
        data = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except ValueError:
                raise ExportError(f"{path}:{number}: not a JSON object per line (JATOS' result data and a data "
                                  "endpoint's log hold one per answer); fix or delete that line.") from None
    if not all(isinstance(row, dict) for row in data):
        raise ExportError(f"{path}: expected rows (JSON objects), found {type(data[0]).__name__}.")
    return data


def read(path) -> list[tuple[str, dict]]:
    """The web study's rows of one file, typed: ``[(where, row)]``, ``where`` naming file and row.

    Raises
    ------
    ExportError
        For a file of another kind, one without a row of the study, or a value of the wrong type.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ExportError(f"{path}: not a data file of the web study ({', '.join(SUFFIXES)}): move it out "
                          f"of {path.parent}.")
    rows = []
    for number, row in enumerate(_objects(path), start=1):
        if row.get("trial_type") != TRIAL_TYPE:
            continue
        where = f"{path}:{number + (path.suffix.lower() == '.csv')}"  # a CSV's first line is its header
        typed = {k: _typed(v, TYPES[k], where, k) if k in TYPES else v for k, v in row.items()}
        typed["task"] = typed.get("task") or "trial"
        rows.append((where, typed))
    if not rows:
        raise ExportError(f"{path}: holds no answer of the web study (no row with trial_type "
                          f"{TRIAL_TYPE!r}); it is another file: move it out of {path.parent}.")
    return rows
