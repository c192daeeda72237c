"""Stimuli, trial lists and the durable response log (helpers/study/stimuli.py, app.py)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from helpers.pipeline import provenance
from tests.conftest import M, columns, fake_grid
from PIL import Image

from helpers.pipeline import store
from helpers.pipeline.settings import load_profile
from helpers.study import stimuli as study
from helpers.study.app import StudyApp


def test_shuffle_is_a_true_column_permutation_never_the_identity():
    rng = np.random.default_rng(1)
    image = fake_grid(rng)
    for m in (2, 3, M):
        grid = fake_grid(rng, m=m)
        for seed in range(50):
            shuffled, perm = study.shuffle_columns(grid, m, np.random.default_rng(seed))
            assert sorted(perm) == list(range(m)) and not (perm == np.arange(m)).all()
            for j, col in enumerate(columns(shuffled, m)):
                np.testing.assert_array_equal(col, columns(grid, m)[perm[j]])
            np.testing.assert_array_equal(shuffled == 255, grid == 255)  # gaps stay gaps
    with pytest.raises(ValueError, match="m=7"):
        study.column_boxes(image.shape[1], 7)


def test_stimuli_pair_each_grid_with_its_shuffle_and_keep_the_key_apart(study_profile):
    p = study_profile
    meta = study.make_stimuli(p)
    table, stimuli_hash = study.load_stimuli(p.artifact("stimuli"))
    assert meta["hash"] == stimuli_hash and meta["n_stimuli"] == len(table) == 2 * 4 + 2 * 2
    public = pd.read_csv(p.artifact("stimuli") / "stimuli.csv")
    assert not {"ordered", "permutation"} & set(public.columns)
    for s in table.itertuples():
        grid = np.asarray(Image.open(p.artifact("grids") / s.layer / f"{s.basis}_{s.component:04d}.png"))
        ordered = np.asarray(Image.open(p.artifact("stimuli") / getattr(s, f"image_{s.ordered}")))
        other = np.asarray(Image.open(p.artifact("stimuli") / getattr(s, f"image_{'b' if s.ordered == 'a' else 'a'}")))
        np.testing.assert_array_equal(ordered, grid)
        perm = [int(v) for v in s.permutation.split()]
        for j, col in enumerate(columns(other)):
            np.testing.assert_array_equal(col, columns(grid)[perm[j]])
        assert not s.identical
    assert set(table.ordered) == {"a", "b"}  # the file name does not give the answer away
    assert study.make_stimuli(p)["hash"] == stimuli_hash  # reused, not remade


def test_stimuli_answered_by_participants_are_never_replaced(study_profile):
    import json

    p = study_profile
    study.make_stimuli(p)
    log = p.artifact("responses") / "human" / "P1.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("{}\n")
    answered = p.artifact("stimuli")
    other = load_profile(p, n_study=3)  # other settings: other stimuli beside them, with their own logs
    assert study.make_stimuli(other)["n_stimuli"] == 2 * 3 + 2 * 2
    assert other.artifact("stimuli") != answered and other.artifact("responses") != p.artifact("responses")
    assert store.read_meta(answered, provenance.expected(p, "stimuli")) and log.exists()
    meta = json.loads((answered / "meta.json").read_text())  # as if made by older code: remade in place
    (answered / "meta.json").write_text(json.dumps({**meta, "code": {"helpers/study/stimuli.py": "sha256:old"}}))
    with pytest.raises(store.StaleArtifactError, match="Move those logs aside"):
        study.make_stimuli(p)
    log.unlink()
    assert study.make_stimuli(p)["n_stimuli"] == 2 * 4 + 2 * 2
    with pytest.raises(store.StaleArtifactError, match="needs 6"):
        study.make_stimuli(load_profile(p, n_study=6))


def test_trial_lists_are_reproducible_per_code_and_differ_between_codes(study_profile):
    study.make_stimuli(study_profile)
    table, _ = study.load_stimuli(study_profile.artifact("stimuli"))
    a, again, b = (study.trial_list(table, code, seed=0) for code in ("P01", "P01", "P02"))
    assert a == again
    assert [t["stimulus_id"] for t in a] != [t["stimulus_id"] for t in b]
    assert sorted(t["stimulus_id"] for t in a) == sorted(table.stimulus_id)  # each stimulus once
    assert [t["trial"] for t in a] == list(range(1, len(table) + 1))
    key = table.set_index("stimulus_id")
    for t in a:
        shown_top = t["top"].rsplit("_", 1)[1][0]
        assert t["ordered_position"] == ("top" if key.ordered[t["stimulus_id"]] == shown_top else "bottom")
    positions = [t["ordered_position"] for code in range(40) for t in study.trial_list(table, f"c{code}")]
    assert 0.4 < positions.count("top") / len(positions) < 0.6
    with pytest.raises(ValueError, match="participant code"):
        study.trial_list(table, "Jane Doe")


def _app(p, **kw):
    return StudyApp(p.artifact("stimuli"), p.artifact("responses") / "human", p.seed, **kw)


def test_answers_are_logged_with_every_field_and_correct_flags(study_profile):
    study.make_stimuli(study_profile)
    app = _app(study_profile, min_rt_ms=0)
    app.start("P01")
    trials = study.trial_list(app.stimuli, "P01", study_profile.seed)
    for choice in ("top", "bottom", "top"):
        app.answer(choice, "key")
    records = study.ResponseLog(study_profile.artifact("responses") / "human" / "P01.jsonl").records()
    assert [r["trial"] for r in records] == [1, 2, 3]
    for r, t, choice in zip(records, trials, ("top", "bottom", "top")):
        assert list(r) == list(study.FIELDS)
        assert (r["stimulus_id"], r["choice"], r["observer"]) == (t["stimulus_id"], choice, "human")
        assert r["correct"] == (choice == t["ordered_position"])
    slow = _app(study_profile, min_rt_ms=60_000)  # an answer before the trial could be seen is ignored
    slow.start("P02")
    slow.answer("top", "key")
    assert not (study_profile.artifact("responses") / "human" / "P02.jsonl").exists()


def test_two_windows_with_one_code_never_log_a_trial_twice(study_profile):
    study.make_stimuli(study_profile)
    first, second = _app(study_profile, min_rt_ms=0), _app(study_profile, min_rt_ms=0)
    first.start("P01")
    second.start("P01")
    first.answer("top")
    second.answer("bottom")  # trial 1 is taken: refused, and the window moves on
    second.answer("bottom")
    trials = [r["trial"] for r in study.ResponseLog(first.log.path).records()]
    assert trials == [1, 2] and "Trial 3 of" in second.progress_text.value


KILLED = textwrap.dedent("""
    import sys, time
    from helpers.study.app import StudyApp
    app = StudyApp(sys.argv[1], sys.argv[2], 0, min_rt_ms=0)
    app.start("P01")
    for i in range(7):
        app.answer("top" if i % 2 else "bottom", "key")
    print("answered", flush=True)
    time.sleep(60)
""")


def test_a_killed_session_keeps_every_answer_and_resumes_without_repeat_or_skip(study_profile):
    p = study_profile
    study.make_stimuli(p)
    human = p.artifact("responses") / "human"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(p.artifact("stimuli")), str(human)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "answered"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    log = study.ResponseLog(human / "P01.jsonl")
    assert [r["trial"] for r in log.records()] == list(range(1, 8))
    with open(log.path, "a") as f:  # and a write torn by a kill
        f.write('{"participant": "P01", "trial": 8, "sti')
    app = _app(p, min_rt_ms=0)
    with pytest.warns(UserWarning, match="torn last line"):
        app.start("P01")
    assert "Trial 8 of 12" in app.progress_text.value
    while app.shown_at is not None:
        app.answer("top", "button")
    records = log.records()
    assert [r["trial"] for r in records] == list(range(1, 13))
    assert sorted(r["stimulus_id"] for r in records) == sorted(app.stimuli.stimulus_id)
    assert (human / "P01.jsonl.torn").read_text().startswith('{"participant": "P01", "trial": 8')
    assert "Thank you" in app.message.value


def test_a_log_made_on_other_stimuli_is_refused_not_extended(study_profile):
    p = study_profile
    study.make_stimuli(p)
    log = p.artifact("responses") / "human" / "P01.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"trial": 1, "stimulus_id": "conv9-pca-01", "stimuli_hash": "sha256:old"}) + "\n")
    app = _app(p, min_rt_ms=0)
    app.start("P01")
    assert "other stimuli" in app.message.value and app.shown_at is None
    assert len(log.read_text().splitlines()) == 1


def test_make_study_says_to_run_06_first(tmp_path, capsys):
    from helpers.study.app import main

    assert main(["--profile", "smoke", "-p", f"data_dir={tmp_path}"]) == 1
    assert "06_user_study" in capsys.readouterr().err
