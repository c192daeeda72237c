"""The user-study analysis on synthetic stimuli and logs with known answers."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import plots, reference
from helpers.pipeline import store
from helpers.study import analysis
from helpers.study.stimuli import load_stimuli

LAYERS = ("conv2", "conv10", "fc1")  # not alphabetical: tables must keep this order
N = 16  # components per layer and basis
HASH = "sha256:test"
CELLS = [(layer, basis) for layer in LAYERS for basis in ("pca", "neuron")]


def make_stimuli(folder):
    rows, keys = [], []
    for layer, basis in CELLS:
        for c in range(1, N + 1):
            sid = f"{layer}-{basis}-{c:02d}"
            rows.append({"stimulus_id": sid, "layer": layer, "basis": basis, "component": c,
                         "label": f"{'PC' if basis == 'pca' else 'neuron'} {c}",
                         "image_a": f"{sid}-a.png", "image_b": f"{sid}-b.png", "identical": False})
            keys.append({"stimulus_id": sid, "ordered": "ab"[c % 2], "permutation": "1 0 3 2 4"})
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "stimuli.csv", index=False)
    pd.DataFrame(keys).to_csv(folder / "answer_key.csv", index=False)
    store.write_json(folder / "meta.json", {"hash": HASH, "params": {
        "layers": list(LAYERS), "n_study": N, "n_targets": 5, "n_neighbours": 3, "thumb": 16, "seed": 0}})


def records(participant, outcomes, observer="human", seed=0):
    """One log's records: ``outcomes[(layer, basis)]`` is the 0/1 outcome of components 1..N."""
    rng = np.random.default_rng(seed)
    trials = [(layer, basis, c) for layer, basis in CELLS for c in range(1, N + 1)]
    out = []
    for trial, i in enumerate(rng.permutation(len(trials)), start=1):
        layer, basis, c = trials[i]
        shown = ("top", "bottom")[rng.integers(2)]
        correct = bool(outcomes[(layer, basis)][c - 1])
        out.append({
            "participant": participant, "observer": observer, "trial": trial, "n_trials": len(trials),
            "stimulus_id": f"{layer}-{basis}-{c:02d}", "layer": layer, "basis": basis, "component": c,
            "ordered_position": shown, "choice": shown if correct else ({"top", "bottom"} - {shown}).pop(),
            "correct": correct, "rt_ms": 812.5, "timestamp": "2025-01-31T14:05:09+01:00",
            "input": "machine" if observer == "machine" else "key", "stimuli_hash": HASH})
    return out


def write_log(responses, recs, participant="p01", folder="human"):
    path = responses / folder / f"{participant}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def exact_outcomes(accuracies, rng):
    """0/1 outcomes with exactly round(acc * N) correct answers per cell, in random places."""
    return {cell: rng.permutation(np.arange(N) < round(acc * N)).astype(int) for cell, acc in accuracies.items()}


@pytest.fixture
def study(tmp_path):
    """12 humans with set accuracies per cell, plus one machine log."""
    make_stimuli(tmp_path / "stimuli")
    rng = np.random.default_rng(1)
    humans = {f"p{i:02d}": {cell: rng.integers(6, N + 1) / N for cell in CELLS} for i in range(1, 13)}
    for i, (name, accuracies) in enumerate(humans.items()):
        write_log(tmp_path / "responses", records(name, exact_outcomes(accuracies, rng), seed=i), name)
    machine = {cell: rng.integers(0, 2, N) for cell in CELLS}
    write_log(tmp_path / "responses", records("observer", machine, "machine"), "observer", "machine")
    stimuli, stimuli_hash = load_stimuli(tmp_path / "stimuli")
    return {"root": tmp_path, "stimuli": stimuli, "hash": stimuli_hash, "humans": humans, "machine": machine}


def load(study, **kw):
    return analysis.load_responses(study["root"] / "responses", study["stimuli"], study["hash"], **kw)


# -- loading -------------------------------------------------------------------

def test_load_stimuli_merges_the_answer_key(study):
    stimuli = study["stimuli"]
    assert study["hash"] == HASH
    assert len(stimuli) == len(CELLS) * N and set(stimuli.ordered) == {"a", "b"}
    assert list(dict.fromkeys(stimuli.layer)) == list(LAYERS)


def test_missing_stimuli_say_which_notebook_makes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="06_user_study"):
        load_stimuli(tmp_path / "stimuli")


def test_valid_logs_load_with_a_complete_sessions_table(study):
    responses, sessions = load(study)
    assert list(sessions.columns) == ["participant", "observer", "source", "n_answered", "n_trials", "complete",
                                      "attention"]
    assert len(sessions) == 13 and sessions.complete.all() and (sessions.n_answered == len(CELLS) * N).all()
    assert sessions.set_index("participant").observer["observer"] == "machine"
    assert len(responses) == 13 * len(CELLS) * N


def test_no_logs_give_empty_tables(study):
    empty = study["root"] / "nothing"
    responses, sessions = analysis.load_responses(empty, study["stimuli"], study["hash"])
    assert responses.empty and sessions.empty
    assert list(analysis.accuracy_table(responses).columns) == analysis.ACCURACY_COLUMNS
    assert list(analysis.paired_tests(responses).columns) == analysis.TEST_COLUMNS


# -- accuracy -------------------------------------------------------------------

def test_accuracy_table_recovers_the_set_accuracies(study):
    responses, _ = load(study)
    table = analysis.accuracy_table(responses)
    assert list(table.columns) == ["observer", "layer", "basis", "n", "accuracy", "sem"]
    assert list(table.observer.unique()) == ["machine", "human"]
    for observer, rows in table.groupby("observer", sort=False):
        assert list(zip(rows.layer, rows.basis)) == CELLS
    human = table[table.observer == "human"].set_index(["layer", "basis"])
    for cell in CELLS:
        values = np.array([acc[cell] for acc in study["humans"].values()])
        assert human.loc[cell, "n"] == 12
        assert human.loc[cell, "accuracy"] == pytest.approx(values.mean())
        assert human.loc[cell, "sem"] == pytest.approx(values.std(ddof=1) / math.sqrt(12))
    machine = table[table.observer == "machine"].set_index(["layer", "basis"])
    for cell in CELLS:
        outcomes = study["machine"][cell]
        assert machine.loc[cell, "n"] == N
        assert machine.loc[cell, "accuracy"] == pytest.approx(outcomes.mean())
        assert machine.loc[cell, "sem"] == pytest.approx(outcomes.std(ddof=1) / math.sqrt(N))


def test_per_participant_accuracy_is_exact(study):
    responses, _ = load(study)
    cells = analysis.per_participant(responses)
    human = cells[cells.observer == "human"]
    for row in human.itertuples():
        assert row.n == N and row.accuracy == study["humans"][row.participant][(row.layer, row.basis)]


def test_one_participant_has_no_standard_error(study):
    responses, _ = load(study)
    table = analysis.accuracy_table(responses[responses.participant.isin(["p01", "observer"])])
    human = table[table.observer == "human"]
    assert human["sem"].isna().all() and (human.n == 1).all()


def test_several_machine_logs_are_separate_observers(study):
    machine = {cell: np.ones(N, int) for cell in CELLS}
    write_log(study["root"] / "responses", records("second", machine, "machine"), "second", "machine")
    table = analysis.accuracy_table(load(study)[0])
    assert list(table.observer.unique()) == ["machine:observer", "machine:second", "human"]
    assert (table[table.observer == "machine:second"].accuracy == 1).all()


# -- paired tests ---------------------------------------------------------------

def wilcoxon_zsplit(d):
    """Signed-rank test by hand: zero ranks split between signs, normal approximation with ties."""
    d = np.round(np.asarray(d, float), 12)
    n, ranks = len(d), stats.rankdata(np.abs(d))
    plus = ranks[d > 0].sum() + ranks[d == 0].sum() / 2
    minus = ranks[d < 0].sum() + ranks[d == 0].sum() / 2
    _, ties = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (ties ** 3 - ties).sum() / 48
    z = (min(plus, minus) - n * (n + 1) / 4) / math.sqrt(var)
    return min(plus, minus), 2 * stats.norm.cdf(-abs(z))


def mcnemar_exact(pca, neuron):
    """Two-sided exact McNemar by summing the binomial(b + c, 1/2) tails."""
    b = int(((pca == 1) & (neuron == 0)).sum())
    c = int(((pca == 0) & (neuron == 1)).sum())
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    return b, min(1.0, 2 * tail)


def test_human_tests_match_an_independent_signed_rank(study):
    tests = analysis.paired_tests(load(study)[0])
    assert list(tests.columns) == analysis.TEST_COLUMNS
    human = tests[tests.observer == "human"].set_index("layer")
    assert list(human.index) == [*LAYERS, "all"]
    humans = study["humans"].values()
    for layer in LAYERS:
        d = [acc[(layer, "pca")] - acc[(layer, "neuron")] for acc in humans]
        statistic, p = wilcoxon_zsplit(d)
        row = human.loc[layer]
        assert row.n == 12 and row.difference == pytest.approx(np.mean(d))
        assert row.statistic == pytest.approx(statistic) and row.p_value == pytest.approx(p)
        assert "Wilcoxon" in row.test and "zsplit" in row.test
    d = [np.mean([acc[(layer, "pca")] - acc[(layer, "neuron")] for layer in LAYERS]) for acc in humans]
    assert human.loc["all", "p_value"] == pytest.approx(wilcoxon_zsplit(d)[1])
    assert human.loc["all", "pca"] == pytest.approx(np.mean([acc[(la, "pca")] for acc in humans for la in LAYERS]))


def test_machine_tests_match_a_brute_force_exact_mcnemar(study):
    tests = analysis.paired_tests(load(study)[0])
    machine = tests[tests.observer == "machine"].set_index("layer")
    outcomes = study["machine"]
    for layer in LAYERS:
        b, p = mcnemar_exact(outcomes[(layer, "pca")], outcomes[(layer, "neuron")])
        assert machine.loc[layer, "n"] == N and "McNemar exact" in machine.loc[layer, "test"]
        assert machine.loc[layer, "statistic"] == b and machine.loc[layer, "p_value"] == pytest.approx(p)
    pooled = [np.concatenate([outcomes[(layer, basis)] for layer in LAYERS]) for basis in ("pca", "neuron")]
    b, p = mcnemar_exact(*pooled)
    assert machine.loc["all", "n"] == N * len(LAYERS)
    assert machine.loc["all", "statistic"] == b and machine.loc["all", "p_value"] == pytest.approx(p)


def test_a_strong_pca_advantage_is_significant(tmp_path):
    make_stimuli(tmp_path / "stimuli")
    rng = np.random.default_rng(2)
    for i in range(12):
        accuracies = {(la, b): (15 if b == "pca" else 9 + i % 3) / N for la, b in CELLS}
        write_log(tmp_path / "responses", records(f"h{i}", exact_outcomes(accuracies, rng), seed=i), f"h{i}")
    machine = {(la, b): np.full(N, int(b == "pca")) for la, b in CELLS}
    write_log(tmp_path / "responses", records("m", machine, "machine"), "m", "machine")
    stimuli, stimuli_hash = load_stimuli(tmp_path / "stimuli")
    tests = analysis.paired_tests(analysis.load_responses(tmp_path / "responses", stimuli, stimuli_hash)[0])
    assert (tests.p_value < 0.01).all() and (tests.difference > 0).all()
    assert tests[tests.observer == "machine"].p_value.iloc[0] == pytest.approx(2 / 2 ** N)


def test_untestable_cases_give_nan_or_one_with_a_reason(study):
    responses, _ = load(study)
    one = analysis.paired_tests(responses[responses.participant.isin(["p01"])])
    assert one.p_value.isna().all() and one.test.str.contains("needs 2 or more participants").all()
    same = responses.copy()
    same.loc[same.observer == "machine", "correct"] = True
    machine = analysis.paired_tests(same[same.observer == "machine"])
    assert (machine.p_value == 1).all() and (machine.statistic == 0).all()


# -- validation -----------------------------------------------------------------

def _drop_choice(recs):
    del recs[2]["choice"]


def _set(index, **fields):
    def change(recs):
        recs[index].update(fields)
    return change


def _repeat_stimulus(recs):
    recs[4].update({k: recs[3][k] for k in ("stimulus_id", "layer", "basis", "component")})


MALFORMED = {
    "missing field": (_drop_choice, r"p01\.jsonl:3: missing field\(s\) \['choice'\]"),
    "unknown stimulus": (_set(1, stimulus_id="conv9-pca-01"), r"p01\.jsonl:2: unknown stimulus_id 'conv9-pca-01'"),
    "duplicate trial": (_set(4, trial=4), r"p01\.jsonl:5: trial 4 was already answered on line 4"),
    "stimulus twice": (_repeat_stimulus, r"p01\.jsonl:5: stimulus '.*' was already answered on line 4"),
    "wrong correct": (lambda recs: recs[0].update(correct=not recs[0]["correct"]), r"p01\.jsonl:1: correct = "),
    "stale hash": (_set(0, stimuli_hash="sha256:old"), r"p01\.jsonl:1: stale log: stimuli_hash 'sha256:old'"),
    "wrong type": (_set(6, component="3"), r"p01\.jsonl:7: field 'component' = '3' is a str, expected int"),
    "bool for int": (_set(6, trial=True), r"p01\.jsonl:7: field 'trial' = True is a bool"),
    "bad choice": (_set(0, choice="left"), r"p01\.jsonl:1: field 'choice' = 'left'"),
    "other layer": (_set(0, layer="fc7"), r"p01\.jsonl:1: layer = 'fc7' but stimuli.csv gives"),
    "other participant": (_set(0, participant="p02"), r"p01\.jsonl:1: participant 'p02' differs from the file"),
    "trial out of range": (_set(0, trial=0), r"p01\.jsonl:1: trial = 0 is outside"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_records_name_the_file_line_and_problem(tmp_path, case):
    make_stimuli(tmp_path / "stimuli")
    recs = records("p01", {cell: np.ones(N, int) for cell in CELLS})
    change, message = MALFORMED[case]
    change(recs)
    write_log(tmp_path / "responses", recs)
    stimuli, stimuli_hash = load_stimuli(tmp_path / "stimuli")
    with pytest.raises(analysis.ResponseLogError, match=message):
        analysis.load_responses(tmp_path / "responses", stimuli, stimuli_hash)


def _setup_with(tmp_path, text, participant="p01", folder="human"):
    make_stimuli(tmp_path / "stimuli")
    path = tmp_path / "responses" / folder / f"{participant}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    stimuli, stimuli_hash = load_stimuli(tmp_path / "stimuli")
    return lambda: analysis.load_responses(tmp_path / "responses", stimuli, stimuli_hash)


def test_a_torn_last_line_says_the_session_was_interrupted(tmp_path):
    lines = [json.dumps(r) for r in records("p01", {cell: np.ones(N, int) for cell in CELLS})[:5]]
    load_torn = _setup_with(tmp_path, "\n".join(lines[:4]) + "\n" + lines[4][:30])
    with pytest.raises(analysis.ResponseLogError, match=r"p01\.jsonl:5: .*interrupted mid-write.*'p01'"):
        load_torn()


def test_a_broken_middle_line_is_not_called_torn(tmp_path):
    lines = [json.dumps(r) for r in records("p01", {cell: np.ones(N, int) for cell in CELLS})[:3]]
    load_broken = _setup_with(tmp_path, lines[0] + "\n{oops\n" + lines[2] + "\n")
    with pytest.raises(analysis.ResponseLogError, match=r"p01\.jsonl:2: not valid JSON"):
        load_broken()


def test_a_human_record_under_machine_is_refused(tmp_path):
    recs = records("p01", {cell: np.ones(N, int) for cell in CELLS})
    load_mixed = _setup_with(tmp_path, "".join(json.dumps(r) + "\n" for r in recs), folder="machine")
    with pytest.raises(analysis.ResponseLogError, match=r"machine/p01\.jsonl:1: observer 'human' .* machine/"):
        load_mixed()


# -- incomplete sessions ----------------------------------------------------------

def test_incomplete_sessions_are_flagged_and_left_out_with_a_warning(study):
    recs = records("p13", {cell: np.zeros(N, int) for cell in CELLS})[:10]
    write_log(study["root"] / "responses", recs, "p13")
    with pytest.warns(UserWarning, match=r"human/p13 \(10 of 96 trials\).*include_incomplete=True"):
        responses, sessions = load(study)
    row = sessions.set_index("participant").loc["p13"]
    assert not row.complete and row.n_answered == 10 and row.n_trials == len(CELLS) * N
    assert "p13" not in set(responses.participant)
    assert (analysis.accuracy_table(responses).query("observer == 'human'").n == 12).all()
    kept, _ = load(study, include_incomplete=True)
    assert (kept.participant == "p13").sum() == 10


# -- figure and paper ---------------------------------------------------------------

def test_figure_writes_png_and_pdf_with_the_published_line(study, tmp_path):
    table = analysis.accuracy_table(load(study)[0])
    fig = plots.user_study(table, published=reference.user_study())
    assert [ax.get_title().split()[0] for ax in fig.axes] == ["machine", "human"]
    labels = [line.get_label() for line in fig.axes[1].lines]
    assert "PCA, published (22 participants)" in labels and "neurons, published (22 participants)" in labels
    paths = plots.save(fig, tmp_path / "figs" / "fig07_user_study")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    plain = plots.user_study(table)
    assert not any("published" in line.get_label() for ax in plain.axes for line in ax.lines)


def test_beside_paper_adds_the_published_means():
    table = pd.DataFrame({"observer": ["human"] * 2, "layer": ["fc1", "fc1"], "basis": ["pca", "neuron"],
                          "n": [3, 3], "accuracy": [0.9, 0.7], "sem": [0.01, 0.02]})
    merged = reference.user_study_beside_paper(table)
    assert list(merged.paper_accuracy) == list(reference.USER_STUDY_ACCURACY["fc1"])
