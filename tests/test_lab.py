"""JupyterLab as `make lab` starts it: at the project root, jupytext.toml applies — a .py is served as a
notebook and saving it updates its paired .ipynb — and it starts as root."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

from helpers.pipeline.settings import ROOT
from tests.study.test_app_browser import free_port


def test_lab_serves_a_py_as_a_notebook_and_saving_it_updates_the_pair(tmp_path):
    make = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True).stdout
    assert f"JUPYTERLAB_SETTINGS_DIR={ROOT}/jupyterlab-settings" in make
    assert "--ServerApp.root_dir=." in make and "--LabApp.default_url=/lab/tree/notebooks" in make
    assert ("--allow-root" in make) == (os.getuid() == 0)
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "jupytext.toml", root)
    for suffix in (".py", ".ipynb"):
        shutil.copy(ROOT / "notebooks" / f"05_ablation{suffix}", root / "notebooks")
    port = free_port()
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.root_dir=.",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         *(["--allow-root"] if os.getuid() == 0 else [])],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/api/contents/notebooks/05_ablation.py"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert lab.poll() is None, lab.stderr.read()[-3000:]
            try:
                with urllib.request.urlopen(url + "?type=notebook&content=1", timeout=5) as r:
                    model = json.load(r)
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not start within 120 s"
                time.sleep(1)
        assert model["type"] == "notebook"  # the .py opens as a notebook, not as text
        cells = model["content"]["cells"]
        cells[0]["source"] += "\n\nEdited in JupyterLab."
        body = json.dumps({"type": "notebook", "format": "json", "content": model["content"]}).encode()
        request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status in (200, 201)
    finally:
        lab.terminate()
        lab.wait(30)
    assert "Edited in JupyterLab." in (root / "notebooks" / "05_ablation.py").read_text()
    paired = json.loads((root / "notebooks" / "05_ablation.ipynb").read_text())
    assert "Edited in JupyterLab." in "".join(paired["cells"][0]["source"])
