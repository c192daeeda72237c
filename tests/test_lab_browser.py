"""JupyterLab in headless Chromium, as a researcher uses it: 04's explorer run and driven, a .py opened
as a notebook and saved updates its pair, the study trial inside a 1366 x 768 window. Lab runs with settings and
workspaces of its own, as `make lab` gives them (:func:`tests.test_lab.lab_environment`), never the user's."""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from helpers.pipeline.settings import ROOT
from tests.conftest import EVERY_BASIS, notebooks_folder
from tests.study.test_app_browser import chromium, free_port
from tests.test_lab import lab_environment


def with_parameters(name, dst, **values):
    """Copy a notebook (as the suite takes it: :func:`tests.conftest.notebooks_folder`) with its parameters cell
    set as a user would edit it: a setting the cell lists is changed in place, any other is added as a line of
    its own."""
    nb = nbformat.read(notebooks_folder() / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for key, value in values.items():
        line = f"{key} = {value!r}"
        cell.source, found = re.subn(rf"^{key} = .*$", line, cell.source, count=1, flags=re.M)
        if not found:
            cell.source += "\n" + line
    nbformat.write(nb, dst / f"{name}.ipynb")


@pytest.fixture
def lab(smoke, tmp_path):
    """JupyterLab over a project holding 04 and the study app set to the smoke run's artifacts, with the settings
    and workspaces `make lab` gives it, in the project's .jupyterlab/."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "jupytext.toml", root)
    dirs = {"profile": "smoke", "data_dir": str(smoke.data_path.parent), "figures_dir": str(tmp_path / "figures"),
            "bases": EVERY_BASIS}
    with_parameters("04_visualize", root / "notebooks", **dirs)
    with_parameters("study_app", root / "notebooks", **dirs, min_rt_ms=100)
    for suffix in (".py", ".ipynb"):  # a pair, as committed
        shutil.copy(notebooks_folder() / f"05_ablation{suffix}", root / "notebooks")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.root_dir=.",
         "--IdentityProvider.token=", "--ServerApp.password=", *(["--allow-root"] if os.getuid() == 0 else [])],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lab_environment(root))
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "api/status", timeout=5).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
                time.sleep(1)
        yield base, root
    finally:
        server.terminate()
        server.wait(30)


def run_all(page, url):
    page.goto(url, timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=120_000)  # the kernel is up
    page.locator(".jp-Notebook .jp-Cell").first.click()  # this notebook is the current one
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile("^Run All Cells")).click()


def test_explorer_and_study_trial_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    lab, root = lab
    paired = root / "notebooks" / "05_ablation.ipynb"
    os.utime(paired, (1_000_000_000, 1_000_000_000))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            run_all(page, lab + "lab/workspaces/explorer/tree/notebooks/04_visualize.ipynb")
            panel = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator("select")).last
            label = panel.locator(".widget-html").first
            label.filter(has_text="PC 1").wait_for(timeout=300_000)  # opens on the first layer's top PC
            assert "conv1 PC 1" in label.inner_text()
            assert panel.locator("img").first.is_visible()
            panel.locator("select").nth(1).select_option("conv2")
            label.filter(has_text="conv2 PC 1").wait_for(timeout=60_000)
            panel.get_by_role("button", name="neuron").click()
            label.filter(has_text="conv2 neuron").wait_for(timeout=60_000)
            panel.get_by_role("button", name="pca").click()
            number = panel.locator("input[type='number']")
            number.fill("3")
            number.press("Enter")
            label.filter(has_text="conv2 PC 3").wait_for(timeout=60_000)

            page.goto(lab + "lab/tree/notebooks/05_ablation.py", timeout=120_000)  # as a link opens it
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)  # a notebook, not a text editor
            opened_as_notebook = page.locator(".jp-FileEditor").count() == 0
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while paired.stat().st_mtime == 1_000_000_000 and time.monotonic() < deadline:
                time.sleep(0.5)

            study = page
            run_all(study, lab + "lab/workspaces/study/tree/notebooks/study_app.ipynb")
            study.get_by_placeholder("participant code").fill("L01", timeout=300_000)
            study.locator(".jp-OutputArea-output").get_by_role("button", name="Start", exact=True).click()
            study.get_by_text("Trial 1 of", exact=False).wait_for(timeout=60_000)
            trial = study.locator(".study-trial")
            trial.scroll_into_view_if_needed()
            boxes = [trial.locator("img").nth(i).bounding_box() for i in range(2)]
            boxes += [trial.get_by_role("button", name=n).bounding_box() for n in ("↑ top", "↓ bottom")]
        except Exception:
            page.screenshot(path=str(ROOT / "site" / "lab-failure.png"))
            raise
        finally:
            browser.close()
    assert opened_as_notebook
    assert paired.stat().st_mtime > 1_000_000_000  # saving the .py wrote its .ipynb pair
    saved = sorted(f.name.split("-")[0] for f in (root / ".jupyterlab" / "workspaces").iterdir())
    assert "explorer" in saved and "study" in saved  # Lab kept its layouts in the project's folder
    assert all(b and b["y"] >= 0 and b["y"] + b["height"] <= 768 and b["x"] + b["width"] <= 1366
               for b in boxes), boxes
