"""JupyterLab as `make lab` starts it: at the project root, jupytext.toml applies — a .py is served as a
notebook and saving it updates its paired .ipynb — it starts as root, and what it writes (settings, workspaces)
goes into the git-ignored .jupyterlab/, its settings seeded from the tracked defaults in jupyterlab-settings/."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers.pipeline.settings import ROOT
from tests.conftest import notebooks_folder
from tests.study.test_app_browser import free_port

DEFAULTS = ROOT / "jupyterlab-settings"
DOCMANAGER = Path("@jupyterlab", "docmanager-extension", "plugin.jupyterlab-settings")


def make_lab() -> str:
    """What `make -n lab` prints: the commands of `make lab` (and of the set-up it runs first)."""
    done = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def seed_command() -> str:
    """The command with which `make lab` seeds Lab's settings folder, as `make -n lab` prints it."""
    lines = make_lab().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("mkdir -p .jupyterlab/settings")), None)
    assert start is not None, "make lab no longer seeds .jupyterlab/settings from jupyterlab-settings/"
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    return "\n".join(lines[start:end + 1])


def lab_environment(project: Path) -> dict:
    """The environment `make lab` gives JupyterLab, for a Lab over ``project``: its settings in
    ``project/.jupyterlab/settings``, seeded from a copy of jupyterlab-settings/ by `make lab`'s own command, and
    its workspaces in ``project/.jupyterlab/workspaces``: neither the user's (~/.jupyter/lab) nor the tracked
    folder."""
    if not (project / "jupyterlab-settings").exists():
        shutil.copytree(DEFAULTS, project / "jupyterlab-settings")
    subprocess.run(["sh", "-c", seed_command()], cwd=project, check=True)
    return {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(project / ".jupyterlab" / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(project / ".jupyterlab" / "workspaces")}


def files(folder: Path) -> dict:
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_make_lab_keeps_labs_settings_and_workspaces_in_an_ignored_folder():
    make = make_lab()
    assert f"JUPYTERLAB_SETTINGS_DIR={ROOT}/.jupyterlab/settings" in make
    assert f"JUPYTERLAB_WORKSPACES_DIR={ROOT}/.jupyterlab/workspaces" in make
    assert "--ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks" in make
    assert ("--allow-root" in make) == (os.getuid() == 0)
    paths = [".jupyterlab/settings/x", ".jupyterlab/workspaces/y", f"jupyterlab-settings/{DOCMANAGER.as_posix()}"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    if ignored.returncode != 128:  # 128: not a git checkout
        assert ignored.stdout.split() == paths[:2]  # Lab's folders are ignored, the tracked defaults are not


def test_make_lab_seeds_the_tracked_defaults_without_overwriting_a_users_settings(tmp_path):
    settings = Path(lab_environment(tmp_path)["JUPYTERLAB_SETTINGS_DIR"])
    assert files(settings) == files(DEFAULTS) and files(DEFAULTS)  # every default copied in
    assert json.loads((settings / DOCMANAGER).read_text()) == \
        {"defaultViewers": {"python": "Jupytext Notebook"}, "autosave": False}  # a .py opens as a notebook; no autosave
    (settings / DOCMANAGER).write_text('{"autosave": true}')  # changed in Lab's settings editor
    added = Path("@jupyterlab", "apputils-extension", "notification.jupyterlab-settings")
    (tmp_path / "jupyterlab-settings" / added).parent.mkdir(parents=True)
    (tmp_path / "jupyterlab-settings" / added).write_text('{"fetchNews": "false"}')  # a default added later
    lab_environment(tmp_path)  # make lab again
    assert (settings / DOCMANAGER).read_text() == '{"autosave": true}'  # kept
    assert (settings / added).read_text() == '{"fetchNews": "false"}'  # the missing one copied in


def test_lab_serves_a_py_as_a_notebook_and_saving_it_updates_the_pair(tmp_path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "jupytext.toml", root)
    for suffix in (".py", ".ipynb"):
        shutil.copy(notebooks_folder() / f"05_ablation{suffix}", root / "notebooks")
    env = lab_environment(root)
    defaults = files(root / "jupyterlab-settings")
    port = free_port()
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.root_dir=.",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         *(["--allow-root"] if os.getuid() == 0 else [])],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}/"
    url = base + "api/contents/notebooks/05_ablation.py"

    def put(path, body):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status in (200, 201, 204)

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
        put("api/contents/notebooks/05_ablation.py",
            {"type": "notebook", "format": "json", "content": model["content"]})
        with urllib.request.urlopen(base + "lab/api/settings/@jupyterlab/docmanager-extension:plugin", timeout=30) as r:
            assert json.load(r)["settings"]["autosave"] is False  # the seeded defaults are Lab's settings
        put("lab/api/settings/@jupyterlab/apputils-extension:notification", {"raw": '{"fetchNews": "false"}'})
        put("lab/api/workspaces/lab-test", {"data": {}, "metadata": {"id": "lab-test"}})  # as Lab saves its layout
    finally:
        lab.terminate()
        lab.wait(30)
    assert "Edited in JupyterLab." in (root / "notebooks" / "05_ablation.py").read_text()
    paired = json.loads((root / "notebooks" / "05_ablation.ipynb").read_text())
    assert "Edited in JupyterLab." in "".join(paired["cells"][0]["source"])
    # what Lab wrote went into .jupyterlab/: the news answer, the workspace; the tracked defaults are as they were
    assert (root / ".jupyterlab" / "settings" / "@jupyterlab" / "apputils-extension" /
            "notification.jupyterlab-settings").exists()
    (workspace,) = (root / ".jupyterlab" / "workspaces").iterdir()
    assert workspace.name.startswith("lab-test") and workspace.suffix == ".jupyterlab-workspace"
    assert files(root / "jupyterlab-settings") == defaults
