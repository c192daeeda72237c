"""The user study's analysis (Fig. 7): response logs, accuracy per layer, paired tests.

Logs are JSON lines, one file per participant, under ``responses/human/`` and
``responses/machine/``; :func:`load_responses` checks every line against the
stimuli and refuses what it cannot trust. Humans are summarised across
participants (mean ± standard error, as in the paper), a machine log across
stimuli; the two are never pooled. Observer labels: ``"human"``, ``"machine"``,
or ``"machine:<participant>"`` for each machine log when there are several.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..pipeline import provenance
from .stimuli import CODE as PARTICIPANT
from .stimuli import FIELDS, MADE_BY

OBSERVERS = ("human", "machine")


BASES = ("pca", "neuron", "ica", "nmf", "sae", "random")  # the order of helpers.bases.KINDS


PAIR = ("pca", "neuron")
"""The paired tests compare the paper's two bases; the accuracy table has every basis answered."""


POSITIONS = ("top", "bottom")


INPUTS = ("key", "button", "machine")


SESSION_COLUMNS = ["participant", "observer", "n_answered", "n_trials", "complete"]


ACCURACY_COLUMNS = ["observer", "layer", "basis", "n", "accuracy", "sem"]


TEST_COLUMNS = ["observer", "layer", "test", "n", "pca", "neuron", "difference", "statistic", "p_value"]


WILCOXON = "Wilcoxon signed-rank (zsplit zeros, normal approximation with tie correction)"


MCNEMAR = "McNemar exact (two-sided binomial test on discordant PC/neuron pairs)"


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


def _check_record(record: dict, where: str, path: Path, stimuli, stimuli_hash: str) -> None:
    """Raise :class:`ResponseLogError` unless ``record`` is a valid answer to these stimuli."""
    _check_fields(record, where)
    folder = path.parent.name
    if record["participant"] != path.stem:
        raise ResponseLogError(f"{where}: participant {record['participant']!r} differs from the file "
                               f"name {path.stem!r}; each log holds one participant and is named after them.")
    if record["observer"] != folder:
        raise ResponseLogError(f"{where}: observer {record['observer']!r} in a log under {folder}/; human "
                               f"and machine answers are kept apart: move the file to "
                               f"responses/{record['observer']}/ if the record is right.")
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


def load_responses(responses_dir, stimuli, stimuli_hash: str, include_incomplete: bool = False):
    """Read and validate every log under ``responses_dir/{human,machine}/*.jsonl``.

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

    Returns
    -------
    responses : DataFrame
        One row per answered trial; ``layer`` and ``basis`` are categorical in
        the stimuli's layer order and (pca, neuron).
    sessions : DataFrame
        One row per log: participant, observer, n_answered, n_trials, complete.

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
            sessions.append({"participant": path.stem, "observer": observer, "n_answered": len(log),
                             "n_trials": len(stimuli), "complete": len(log) == len(stimuli)})
    sessions = pd.DataFrame(sessions, columns=SESSION_COLUMNS)
    responses = pd.DataFrame(records, columns=list(FIELDS))
    incomplete = sessions[~sessions["complete"]]
    if len(incomplete) and not include_incomplete:
        warnings.warn("leaving out incomplete session(s) " + ", ".join(
            f"{r.observer}/{r.participant} ({r.n_answered} of {r.n_trials} trials)" for r in incomplete.itertuples())
            + "; pass include_incomplete=True to keep their answers.", stacklevel=2)
        dropped = set(zip(incomplete["observer"], incomplete["participant"]))
        responses = responses[[key not in dropped for key in zip(responses["observer"], responses["participant"])]]
    layers = list(dict.fromkeys(stimuli["layer"]))
    responses = responses.astype({"layer": pd.CategoricalDtype(layers), "basis": pd.CategoricalDtype(BASES),
                                  "correct": bool})
    return responses.sort_values(["observer", "participant", "trial"]).reset_index(drop=True), sessions


def per_participant(responses):
    """Accuracy of each participant per layer and basis.

    Returns
    -------
    DataFrame
        Columns observer, participant, layer, basis, n (trials), accuracy.
    """
    cells = responses.groupby(["observer", "participant", "layer", "basis"], observed=True)["correct"]
    return cells.agg(n="count", accuracy="mean").reset_index()


def _observers(responses) -> list[tuple[str, str, pd.DataFrame]]:
    """``(label, kind, rows)``: each machine log on its own, then all humans together."""
    machines = sorted(responses.loc[responses["observer"] == "machine", "participant"].unique())
    groups = [("machine" if len(machines) == 1 else f"machine:{m}", "machine",
               responses[(responses["observer"] == "machine") & (responses["participant"] == m)])
              for m in machines]
    humans = responses[responses["observer"] == "human"]
    return groups + ([("human", "human", humans)] if len(humans) else [])


def _units(rows, kind: str):
    """``(unit, frame)``: per-participant accuracies (humans) or per-stimulus 0/1 outcomes (machine)."""
    if kind == "human":
        return "participant", per_participant(rows)
    return "component", rows.assign(accuracy=rows["correct"].astype(float))


def _sem(values) -> float:
    return values.std(ddof=1) / np.sqrt(len(values))


def accuracy_table(responses):
    """Accuracy per observer, layer and basis: the table behind Fig. 7.

    For ``human`` the unit is the participant: ``n`` participants, ``accuracy``
    the mean of their accuracies, ``sem`` its standard error
    (``std(ddof=1) / sqrt(n)``, NaN for one participant). For a machine log
    the unit is the stimulus: ``n`` stimuli, the fraction answered correctly
    and the standard error of the 0/1 outcomes.

    Returns
    -------
    DataFrame
        Columns observer, layer, basis, n, accuracy, sem; layers in stimuli
        order, bases in the order of ``helpers.bases.KINDS`` (pca before neuron).
    """
    tables = []
    for label, kind, rows in _observers(responses):
        cells = _units(rows, kind)[1].groupby(["layer", "basis"], observed=True)["accuracy"]
        table = cells.agg(n="count", accuracy="mean", sem=_sem).reset_index().assign(observer=label)
        tables.append(table.astype({"layer": str, "basis": str})[ACCURACY_COLUMNS])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ACCURACY_COLUMNS)


def _pairs(rows, kind: str):
    """PCA and neuron outcome side by side: per participant (humans) or per component rank (machine)."""
    unit, values = _units(rows, kind)
    wide = values.pivot_table(index=["layer", unit], columns="basis", values="accuracy", observed=True)
    return wide.reindex(columns=list(PAIR)).dropna().reset_index()


def _wilcoxon(pairs) -> dict:
    """Wilcoxon signed-rank test on per-participant PCA - neuron accuracy."""
    diff = np.round(pairs["pca"] - pairs["neuron"], 12)  # exact ties despite float error
    if len(diff) < 2:
        return {"test": WILCOXON + ": not computed, needs 2 or more participants",
                "statistic": np.nan, "p_value": np.nan}
    result = stats.wilcoxon(diff, zero_method="zsplit", correction=False, method="approx")
    return {"test": WILCOXON, "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def _mcnemar(pairs) -> dict:
    """McNemar's exact test; ``statistic`` is the number of pairs where only the PC was right."""
    pca_only = int(((pairs["pca"] == 1) & (pairs["neuron"] == 0)).sum())
    neuron_only = int(((pairs["pca"] == 0) & (pairs["neuron"] == 1)).sum())
    discordant = pca_only + neuron_only
    p = stats.binomtest(pca_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"test": MCNEMAR, "statistic": float(pca_only), "p_value": float(p)}


def _summary(pairs, test) -> dict:
    return {"n": len(pairs), "pca": pairs["pca"].mean(), "neuron": pairs["neuron"].mean(),
            "difference": (pairs["pca"] - pairs["neuron"]).mean(), **test(pairs)}


def paired_tests(responses):
    """PCA vs neuron accuracy, paired, per layer and over all layers (layer ``"all"``).

    Humans: Wilcoxon signed-rank test of each participant's PCA - neuron
    accuracy (zero differences split between the signs; normal approximation,
    tie-corrected, no continuity correction); overall on each participant's
    mean over layers. A machine log: McNemar's exact test pairing the i-th PC
    with the i-th neuron of a layer; ``statistic`` counts the pairs where only
    the PC was right, ``p_value`` is the two-sided binomial test among the
    discordant pairs (1 when there are none); overall pooled over layers.
    ``p_value`` is NaN when a test cannot be computed; ``test`` says why.

    Returns
    -------
    DataFrame
        Columns observer, layer, test, n (participants or pairs), pca, neuron
        (mean accuracies), difference (mean of PCA - neuron), statistic, p_value.
    """
    rows = []
    for label, kind, group in _observers(responses):
        test = _wilcoxon if kind == "human" else _mcnemar
        pairs = _pairs(group, kind)
        if pairs.empty:  # no layer with answers in both bases
            continue
        for layer, layer_pairs in pairs.groupby("layer", observed=True):
            rows.append({"observer": label, "layer": str(layer), **_summary(layer_pairs, test)})
        overall = pairs.groupby("participant")[list(PAIR)].mean() if kind == "human" else pairs
        rows.append({"observer": label, "layer": "all", **_summary(overall, test)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


STEP = provenance.declare(
    __name__, "07_user_study_analysis", reads=("stimuli", "machine"),
    uses=("model", "layers", "bases", "mis_similarity", "seed"),
    outputs=(provenance.Output("user_study_accuracy.csv"), provenance.Output("user_study_tests.csv"),
             provenance.Output("fig07_user_study",
                               caption="Fig. 7 · user study (machine observer unless people took part)"),
             provenance.Output("user_study_vs_published.csv", when=lambda p: p.published),
             provenance.Output("machine_interpretability.csv", gather="machine_interpretability"),
             provenance.Output("fig_machine_interpretability",
                               caption="Interpretability without people · grid observer and held-out queries")))
"""07 makes no artifact: it draws the study's tables and Fig. 7 from the stimuli, the logs and the machine scores."""
