"""The web study: the trial list in the browser, the built folder, a session in Chromium, and 07 reading it."""
import json
import shutil
import statistics
import subprocess
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from helpers.pipeline.settings import load_profile
from helpers.study import analysis, exports, web
from helpers.study import stimuli as study
from tests.study.test_analysis import CELLS, HASH, N, make_stimuli
from tests.study.test_app_browser import chromium

TRIALS_JS = web.SOURCE / "trials.js"


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("needs Node.js (`apt-get install nodejs`), which the web study is built with")
    return path


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    """jsPsych at the pinned versions, installed once for the session by ``npm ci`` (never the user's cache)."""
    return web.node_modules(tmp_path_factory.mktemp("npm"))


def test_the_page_draws_the_apps_trial_list_for_any_code():
    """trials.js against numpy: the same order and top/bottom assignment for 60 codes, seeds and sizes."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(60):
        n = int(rng.integers(1, 120))
        table = pd.DataFrame({"stimulus_id": [f"s{j}" for j in range(n)], "layer": "conv1", "basis": "pca",
                              "component": range(1, n + 1), "image_a": [f"a{j}" for j in range(n)],
                              "image_b": [f"b{j}" for j in range(n)], "ordered": rng.choice(["a", "b"], n)})
        code = "".join(rng.choice(list("abcXYZ0129_-"), int(rng.integers(1, 41))))
        if i == 0:
            code = "5f2a9c1e0b3d4a5f6e7d8c9b"  # a Prolific id
        cases.append({"code": code, "seed": int(rng.integers(0, 2**31)) if i % 2 else 0,
                      "stimuli": table.to_dict("records")})
    script = (f"const t = require({json.dumps(str(TRIALS_JS))});"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(cases.map(c => t.trialList(c.stimuli, c.code, c.seed))));")
    done = subprocess.run([node(), "-e", script], input=json.dumps(cases, default=int), capture_output=True,
                          text=True, check=True)
    for case, got in zip(cases, json.loads(done.stdout)):
        expected = study.trial_list(pd.DataFrame(case["stimuli"]), case["code"], case["seed"])
        assert got == json.loads(json.dumps(expected, default=int)), case["code"]


@pytest.fixture
def built(copy, packages, tmp_path):
    """The web study of a copy of the smoke run: (profile, folder)."""
    p = load_profile("smoke", **copy.params)
    return p, web.build(p, tmp_path / "web", attention_checks=2, min_rt_ms=100, packages=packages)


def test_the_folder_is_self_contained_and_records_what_made_it(built, packages):
    p, folder = built
    stimuli, stimuli_hash = study.load_stimuli(p.artifact("stimuli"))
    record = json.loads((folder / "build.json").read_text())
    assert record["packages"] == web.pinned() == {"jspsych": "8.3.0", "@jspsych/plugin-html-button-response": "2.1.0",
                                                  "@jspsych/plugin-survey-text": "2.1.1"}
    assert record["stimuli"]["hash"] == stimuli_hash and record["settings"]["seed"] == p.seed
    files = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file())
    assert files == sorted([*record["files"], "build.json"])
    assert sorted(f for f in files if f.startswith("images/")) == sorted(
        f for s in stimuli.itertuples() for f in (s.image_a, s.image_b))
    for name in ("index.html", "study.js", "experiment.js", *web.LIBRARIES):
        text = (folder / name).read_text()
        assert "sourceMappingURL" not in text, name
        assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text, name
    config = json.loads((folder / "study.js").read_text().removeprefix("window.STUDY = ").rstrip(";\n"))
    assert "ordered" not in json.dumps(config["stimuli"])  # the answer key is masked
    unmasked = {s["stimulus_id"]: "a" if s["key"] ^ web._masked(stimuli_hash, s["stimulus_id"], "b") else "b"
                for s in config["stimuli"]}
    assert unmasked == dict(zip(stimuli.stimulus_id, stimuli.ordered))


def test_build_refuses_what_it_cannot_serve(copy, packages, tmp_path):
    p = load_profile("smoke", **copy.params)
    for kw, match in (({"attention_checks": -1}, "attention_checks"), ({"completion_code": "a b"}, "completion_code"),
                      ({"data_url": "ftp://x"}, "data_url"), ({"consent": tmp_path / "none.html"}, "consent")):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            web.build(p, tmp_path / "web", packages=packages, **kw)
    assert not (tmp_path / "web").exists()
    other = load_profile("smoke", **{**copy.params, "n_study": 3})  # stimuli never made for these settings
    with pytest.raises(FileNotFoundError, match="06_user_study"):
        web.build(other, tmp_path / "web", packages=packages)


def test_a_session_in_chromium_from_file_answers_reloads_resumes_and_downloads(built, tmp_path):
    """Every trial by key at a fast human pace, a reload halfway, the download read by 07."""
    from playwright.sync_api import sync_playwright

    p, folder = built
    stimuli, stimuli_hash = study.load_stimuli(p.artifact("stimuli"))
    trials = study.trial_list(stimuli, "PPT01", p.seed)
    n = len(trials)
    base = folder.resolve().as_uri()
    requests, errors, answered, latency = [], [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/index.html?PROLIFIC_PID=PPT01&STUDY_ID=S1&SESSION_ID=X9")
            page.get_by_role("button", name="I agree — start").click()
            reloaded = False
            while True:
                trial = page.locator(".study-trial.study-ready")
                trial.or_(page.locator("#study-download")).first.wait_for(timeout=30_000)
                if page.locator("#study-download").count():
                    break
                task, number = trial.get_attribute("data-task"), int(trial.get_attribute("data-number"))
                if task == "attention":
                    text = trial.inner_text()
                    choice = "top" if "answer ↑ top" in text else "bottom"
                else:
                    choice = "top" if number % 3 else "bottom"
                    answered.append((number, choice))
                page.wait_for_timeout(120)  # slower than min_rt_ms (100)
                start = time.perf_counter()
                page.keyboard.press({"top": "ArrowUp", "bottom": "ArrowDown"}[choice])
                page.locator(f'.study-trial[data-task="{task}"][data-number="{number}"]').wait_for(
                    state="detached", timeout=10_000)
                page.locator(".study-trial.study-ready").or_(page.locator("#study-download")).first.wait_for()
                latency.append(time.perf_counter() - start)
                if len(answered) == n // 2 and not reloaded:
                    reloaded = True
                    page.reload()
                    page.get_by_text(f"You have answered {n // 2} of {n} pairs").wait_for()
                    page.get_by_role("button", name="Continue").click()
            with page.expect_download() as download:
                page.locator("#study-download").click()
            target = p.artifact("responses") / "web" / download.value.suggested_filename
            target.parent.mkdir(parents=True, exist_ok=True)
            download.value.save_as(target)
        finally:
            browser.close()
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(base + "/") and not u.startswith(("data:", "blob:"))]
    assert not outside, outside
    assert [number for number, _ in answered] == list(range(1, n + 1))  # none repeated, none lost
    rows = pd.read_csv(target)
    assert set(rows.study_id) == {"S1"} and set(rows.session_id) == {"X9"}
    assert sorted(rows.loc[rows.task == "attention", "check"]) == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete, attentive: nothing to leave out
        responses, sessions = analysis.load_responses(p.artifact("responses"), stimuli, stimuli_hash, seed=p.seed)
    web_session = sessions[sessions.source == "web"].iloc[0]
    assert (web_session.participant, web_session.n_answered, web_session.complete, web_session.attention) == \
        ("PPT01", n, True, "2/2")
    mine = responses[responses.participant == "PPT01"].set_index("trial")
    expected = {t["trial"]: choice == t["ordered_position"] for t, (_, choice) in zip(trials, answered)}
    assert mine.correct.to_dict() == expected
    table = analysis.accuracy_table(responses)
    human = table[table.observer == "human"].set_index(["layer", "basis"]).accuracy
    given = pd.DataFrame({"layer": [t["layer"] for t in trials], "basis": [t["basis"] for t in trials],
                          "correct": [expected[t["trial"]] for t in trials]})
    by_cell = given.groupby(["layer", "basis"]).correct.mean()
    assert {k: human[k] for k in by_cell.index} == pytest.approx(by_cell.to_dict())
    print(f"\nweb study: {n} trials, page time per trial (key press to next grids drawn) median "
          f"{1000 * statistics.median(latency):.0f} ms, max {1000 * max(latency):.0f} ms")


# --- 07 reading the web study's files, on synthetic stimuli ------------------------------------------------------

def web_rows(stimuli, participant, seed=0, trials=None, stimuli_hash=HASH, check=None):
    """The rows of the end page's download for ``participant`` (each trial answered "top")."""
    rows = []
    for t in study.trial_list(stimuli, participant, seed)[:trials]:
        rows.append({"trial_type": "grid-choice", "task": "trial", **study.response(
            t, participant, "human", len(stimuli), "top", 900.0, "key", stimuli_hash)})
    if check is not None:
        rows.append({"trial_type": "grid-choice", "task": "attention", "participant": participant, "check": 1,
                     "asked": "bottom", "choice": check, "passed": check == "bottom", "rt_ms": 700.0})
    return rows


@pytest.fixture
def synthetic(tmp_path):
    make_stimuli(tmp_path / "stimuli")
    stimuli, stimuli_hash = study.load_stimuli(tmp_path / "stimuli")
    return tmp_path / "responses", stimuli, stimuli_hash


def write(folder, name, rows, kind="csv"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if kind == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif kind == "json":
        path.write_text(json.dumps([{"trial_type": "html-button-response", "rt": 5}, *rows]))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_07_reads_csv_json_and_jatos_lines_alike(synthetic):
    responses_dir, stimuli, stimuli_hash = synthetic
    for i, kind in enumerate(("csv", "json", "txt")):
        write(responses_dir / "web", f"p{i}.{kind}", web_rows(stimuli, f"W{i}"), kind)
    responses, sessions = analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    assert list(sessions.source) == ["web"] * 3 and sessions.complete.all()
    assert len(responses) == 3 * len(CELLS) * N
    for i in range(3):
        mine = responses[responses.participant == f"W{i}"]
        expected = [t["ordered_position"] == "top" for t in study.trial_list(stimuli, f"W{i}", 0)]
        assert list(mine.sort_values("trial").correct) == expected


def test_07_refuses_data_from_other_stimuli_and_other_trial_lists(synthetic):
    responses_dir, stimuli, stimuli_hash = synthetic
    path = write(responses_dir / "web", "old.csv", web_rows(stimuli, "W1", stimuli_hash="sha256:other"))
    with pytest.raises(analysis.ResponseLogError, match="stimuli_hash 'sha256:other' differs"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    write(responses_dir / "web", "old.csv", web_rows(stimuli, "W1", seed=7))  # built with another seed
    with pytest.raises(analysis.ResponseLogError, match="trial list of that participant"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    with pytest.raises(ValueError, match="seed="):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash)
    path.unlink()


def test_07_reports_partial_sessions_duplicates_failed_checks_and_foreign_files(synthetic):
    responses_dir, stimuli, stimuli_hash = synthetic
    web_dir = responses_dir / "web"
    write(web_dir, "full.csv", web_rows(stimuli, "W1", check="bottom"))
    write(web_dir, "partial.csv", web_rows(stimuli, "W2", trials=10))
    with pytest.warns(UserWarning, match=r"incomplete session\(s\) human/W2 \(10 of 96 trials\)"):
        responses, sessions = analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    assert set(responses.participant) == {"W1"}
    assert sessions.set_index("participant").attention.to_dict() == {"W1": "1/1", "W2": ""}
    write(web_dir, "inattentive.csv", web_rows(stimuli, "W3", check="top"))
    with pytest.warns(UserWarning, match=r"failed an attention check: W3 \(0/1 passed\)"):
        responses, _ = analysis.load_responses(responses_dir, stimuli, stimuli_hash, True, seed=0)
    assert set(responses.participant) == {"W1", "W2"}
    again = write(web_dir, "W1-from-jatos.txt", web_rows(stimuli, "W1"), "txt")  # one participant, two files
    with pytest.raises(analysis.ResponseLogError, match="'W1' is in both .*W1-from-jatos.txt and .*full.csv"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    again.unlink()
    rows = web_rows(stimuli, "W4")
    write(web_dir, "resent.txt", rows + rows[:2], "txt")  # an endpoint that received two answers twice
    with pytest.warns(UserWarning, match=r"2 row\(s\) repeated unchanged, counted once"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, True, seed=0, include_inattentive=True)
    changed = dict(rows[0], choice="bottom", correct=not rows[0]["correct"])
    write(web_dir, "resent.txt", rows + [changed], "txt")
    with pytest.raises(analysis.ResponseLogError, match="answered trial 1 before .* with another answer"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    (web_dir / "resent.txt").unlink()
    (web_dir / "notes.md").write_text("pilot notes")
    with pytest.raises(analysis.ResponseLogError, match="notes.md: not a data file of the web study"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)
    (web_dir / "notes.md").unlink()
    write(web_dir, "survey.csv", [{"trial_type": "survey-text", "response": "hi"}])
    with pytest.raises(analysis.ResponseLogError, match="survey.csv: holds no answer of the web study"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)


def test_a_participant_in_the_app_and_on_the_web_is_refused(synthetic):
    responses_dir, stimuli, stimuli_hash = synthetic
    rows = web_rows(stimuli, "W1")
    (responses_dir / "human").mkdir(parents=True)
    (responses_dir / "human" / "W1.jsonl").write_text(
        "".join(json.dumps({k: r[k] for k in study.FIELDS}) + "\n" for r in rows))
    write(responses_dir / "web", "w1.csv", rows)
    with pytest.raises(analysis.ResponseLogError, match="answered in the app .* and on the web"):
        analysis.load_responses(responses_dir, stimuli, stimuli_hash, seed=0)


def test_exports_types_csv_text():
    assert exports._typed("true", bool, "x", "c") is True and exports._typed("3", int, "x", "c") == 3
    with pytest.raises(exports.ExportError, match="'c' = '3.5' is not a whole number"):
        exports._typed("3.5", int, "x", "c")
