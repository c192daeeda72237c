"""The study app in a real browser: Voila on localhost, headless Chromium driven by Playwright."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers.pipeline.settings import load_profile
from helpers.study import stimuli as study


def chromium() -> str:
    """Debian's chromium (or $CHROMIUM); CI must have it, elsewhere the test says how to get it."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "needs Chromium: `apt-get install chromium` (Debian) or set CHROMIUM=/path/to/chrome"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(copy):
    """``make study``'s command on a copy of the smoke run; yields (profile, url)."""
    p = load_profile("smoke", **copy.params)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "helpers.study.app", "--profile", "smoke", "--port", str(port),
         *(a for k, v in copy.params.items() for a in ("-p", f"{k}={v}")), "-p", "min_rt_ms=100"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "Voila did not start within 180 s"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        yield p, f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def _start(page, url, code):
    page.goto(url, timeout=180_000)
    page.get_by_placeholder("participant code").fill(code, timeout=180_000)  # the kernel has rendered
    page.get_by_role("button", name="Start").click()


def _wait_trial(page, n):
    page.get_by_text(f"Trial {n} of", exact=False).wait_for(timeout=30_000)


def test_browser_session_answers_by_keys_and_button_and_resumes_after_reload(served):
    from playwright.sync_api import sync_playwright

    p, url = served
    answers = [("ArrowUp", "top", "key"), ("ArrowDown", "bottom", "key"), ("ArrowDown", "bottom", "key"),
               (None, "top", "button")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            _start(page, url, "B01")
            for n, (key, _, _) in enumerate(answers, start=1):
                _wait_trial(page, n)
                page.wait_for_timeout(250)  # at a human pace: slower than min_rt_ms
                if key:
                    page.hover(".study-trial", position={"x": 20, "y": 20})  # keys go to the trial under the pointer
                    page.keyboard.press(key)
                else:
                    page.get_by_role("button", name="↑ top").click()
            _wait_trial(page, 5)
            page.reload()
            _start(page, url, "B01")
            _wait_trial(page, 5)
            resumed = page.locator(".study-trial").inner_text()
            small = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
            _start(small, url, "B02")
            _wait_trial(small, 1)
            boxes = [small.locator(".study-trial img").nth(i).bounding_box() for i in range(2)]
            boxes += [small.get_by_role("button", name=n).bounding_box() for n in ("↑ top", "↓ bottom")]
        finally:
            browser.close()
    stimuli, _ = study.load_stimuli(p.artifact("stimuli"))
    trials = study.trial_list(stimuli, "B01", p.seed)
    assert "Trial 5 of " + str(len(trials)) in resumed.replace("\n", " ")
    assert all(b and b["height"] > 0 and b["y"] + b["height"] <= 768 and b["x"] + b["width"] <= 1366
               for b in boxes), boxes
    key = stimuli.set_index("stimulus_id").ordered
    records = study.ResponseLog(p.artifact("responses") / "human" / "B01.jsonl").records()
    assert [r["trial"] for r in records] == [1, 2, 3, 4]
    for r, t, (_, choice, source) in zip(records, trials, answers):
        ordered_on_top = t["top"].endswith(f"_{key[t['stimulus_id']]}.png")  # from the answer key itself
        assert (r["stimulus_id"], r["choice"], r["input"]) == (t["stimulus_id"], choice, source)
        assert r["correct"] == ((choice == "top") == ordered_on_top)
        assert r["rt_ms"] >= 100
