"""Shared fixtures: tiny data that exercise the real loading code; the notebooks the suite executes (those
committed at HEAD); and the guard that fails a session which changed the project's data/ or figures/."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from helpers.pipeline import keys, store
from helpers.pipeline.settings import ROOT, TRACE_ENV, load_profile
from helpers.study import stimuli as study

WNIDS = ("n01440764", "n01443537", "n01484850")


# --- The notebooks the suite executes: those committed at HEAD --------------------------------------------------

WORKING_NOTEBOOKS_ENV = "HELPERS_TEST_WORKING_NOTEBOOKS"
"""``HELPERS_TEST_WORKING_NOTEBOOKS=1``: the suite executes the working copy of ``notebooks/``, edits included,
instead of the notebooks committed at HEAD."""


def _committed(folder: str) -> dict[str, bytes] | None:
    """``{name: bytes}`` of every file directly in ``folder`` (relative to the project root) as committed at HEAD;
    None outside a git checkout or where HEAD has no such folder."""
    def git(*args) -> bytes:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout

    try:
        listing = git("ls-tree", "-z", "HEAD", f"./{folder}/").decode()
        names = [entry.split("\t", 1)[1].rsplit("/", 1)[-1] for entry in listing.split("\0")
                 if entry and entry.split()[1] == "blob"]
        return {name: git("cat-file", "blob", f"HEAD:./{folder}/{name}") for name in names} or None
    except (OSError, subprocess.CalledProcessError):
        return None


@functools.lru_cache(maxsize=None)
def notebooks_folder() -> Path:
    """The folder whose notebooks the suite executes and reads: ``notebooks/`` when it holds exactly what HEAD
    holds, outside a git checkout, or under ``HELPERS_TEST_WORKING_NOTEBOOKS=1``; otherwise a temporary folder
    (removed at exit) holding every file of ``notebooks/`` as committed at HEAD, so that a notebook being edited
    (a parameter tried in JupyterLab, say) is not what the suite runs. Kernels still import this checkout's
    ``helpers``."""
    working = ROOT / "notebooks"
    if os.environ.get(WORKING_NOTEBOOKS_ENV, "") not in ("", "0"):
        return working
    committed = _committed("notebooks")
    if committed is None:
        return working
    on_disk = {f.name: f for f in working.iterdir() if f.is_file()} if working.is_dir() else {}
    if set(on_disk) == set(committed) and all(on_disk[n].read_bytes() == b for n, b in committed.items()):
        return working
    folder = Path(tempfile.mkdtemp(prefix="helpers-notebooks-HEAD-"))
    atexit.register(shutil.rmtree, folder, True)
    for name, content in committed.items():
        (folder / name).write_bytes(content)
    return folder


def numbered_notebooks() -> list[Path]:
    """The numbered notebooks the suite executes, in order (:func:`notebooks_folder`)."""
    return sorted(notebooks_folder().glob("[0-9][0-9]_*.ipynb"))


_RUNNER = """import sys
from pathlib import Path
from helpers import run
suites, find = Path(sys.argv.pop(1)), run.find_notebooks
def find_notebooks(only=None, folder=run.NOTEBOOKS):
    return find(only, suites if Path(folder) == run.NOTEBOOKS else folder)
run.find_notebooks = find_notebooks
sys.exit(run.main())
"""


def runner_command() -> list[str]:
    """``python -m helpers.run``, as a command line to which the arguments are appended, taking the notebooks
    from :func:`notebooks_folder` (where that is not ``notebooks/``, the same ``main`` started with ``-c``)."""
    folder = notebooks_folder()
    if folder == ROOT / "notebooks":
        return [sys.executable, "-m", "helpers.run"]
    return [sys.executable, "-c", _RUNNER, str(folder)]


@pytest.fixture(scope="session", autouse=True)
def runner_takes_the_suites_notebooks():
    """In this process, :func:`helpers.run.run` and ``main`` given no folder take the notebooks from
    :func:`notebooks_folder` (a folder given explicitly is kept)."""
    suites = notebooks_folder()
    if suites == ROOT / "notebooks":
        yield suites
        return
    from helpers import run

    find = run.find_notebooks

    @functools.wraps(find)
    def find_notebooks(only=None, folder=run.NOTEBOOKS):
        return find(only, suites if Path(folder) == run.NOTEBOOKS else folder)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "find_notebooks", find_notebooks)
        yield suites


# --- The guard: a session that changed the project's data/ or figures/ fails -------------------------------------

GUARD_ENV = "HELPERS_GUARD_ROOT"
"""The folder whose ``data/`` and ``figures/`` the guard watches (default: the project root)."""
GUARDED = ("data", "figures")
GUARD_MAY_ADD = ("data/raw/",)
"""What a session may add: Fashion-MNIST's download (``FASHION_LOCAL_DIR`` in ``helpers/images/fashion.py``),
fetched on first use where Debian's copy is missing, as ``make figures`` would."""
_GUARD = pytest.StashKey[tuple]()
_GUARD_REPORT = pytest.StashKey[list]()


def guarded_files(root: Path) -> dict[str, tuple | None]:
    """``{name: (size, mtime_ns)}`` of every file under ``root``'s data/ and figures/ (names relative to
    ``root``, POSIX); every folder too, as ``{name + "/": None}``. One ``lstat`` per file, no reading."""
    found: dict[str, tuple | None] = {}
    for top in GUARDED:
        for dirpath, dirnames, filenames in os.walk(root / top):
            here = Path(dirpath).relative_to(root).as_posix()
            found.update({f"{here}/{name}/": None for name in dirnames})
            for name in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:  # removed meanwhile: the comparison tells
                    continue
                found[f"{here}/{name}"] = (st.st_size, st.st_mtime_ns)
    return found


def guard_changes(before: dict, after: dict, shown: int = 20) -> list[str]:
    """One line per kind of change (added, removed, changed: size or modification time) between two
    :func:`guarded_files` listings, naming the first ``shown`` paths of each; [] when nothing changed."""
    kinds = {"added": sorted(n for n in after.keys() - before.keys() if not n.startswith(GUARD_MAY_ADD)),
             "removed": sorted(before.keys() - after.keys()),
             "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n])}
    return [f"{kind} ({len(names)}): {', '.join(names[:shown])}" + (", ..." if len(names) > shown else "")
            for kind, names in kinds.items() if names]


def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker: its controller guards the session
        return
    root = Path(os.environ.get(GUARD_ENV) or ROOT)
    session.config.stash[_GUARD] = (root, guarded_files(root))


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown
def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(_GUARD, None)
    if state is None:
        return
    root, before = state
    changes = guard_changes(before, guarded_files(root))
    if not changes:
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_GUARD_REPORT] = [
        f"the session changed {root / 'data'} or {root / 'figures'}, which the suite must never write:", *changes,
        "A test writes there when it runs a profile without data_dir and figures_dir (pass temporary folders, as "
        "the fixtures in tests/conftest.py do); if a run outside the suite (make figures, a notebook in "
        "JupyterLab) wrote them meanwhile, rerun the tests once it is done."]
    if session.config.pluginmanager.get_plugin("terminalreporter") is None:
        print("\n".join(session.config.stash[_GUARD_REPORT]), file=sys.stderr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = config.stash.get(_GUARD_REPORT, None)
    if report:
        terminalreporter.section("data/ and figures/ changed", sep="=", red=True, bold=True)
        for line in report:
            terminalreporter.line(line, red=True)


class RandomImages(Dataset):
    """Seeded random images with labels, counting how many items were read."""

    def __init__(self, n=10, shape=(3, 224, 224), seed=0, fail_at=None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn((n, *shape), generator=g)
        self.fail_at, self.reads = fail_at, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            raise KeyboardInterrupt(f"simulated interruption at image {i}")
        self.reads += 1
        return self.x[i], i % 3


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory):
    """An ImageNet-layout folder of JPEGs: train/ and val/, three WordNet-id classes."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(180, 320, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def write_tiny_broden(root):
    """A Broden folder at ``root``: six ADE20K-like images (48 px JPEGs, 24 px RG-encoded masks of objects and
    parts, scene and texture numbers) and one image of another subset."""
    from tests.images.test_concepts import INDEX_COLUMNS, LABELS, write_csv, write_mask

    root.mkdir(parents=True)
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
              [(k, n, c, 10, 0.1, "") for k, n, c in LABELS])
    rng = np.random.default_rng(0)
    rows = []
    for k, image in enumerate([*(f"ade20k/ADE_{i}.jpg" for i in range(6)), "pascal/P_0.jpg"]):
        stem = image[:-4]
        (root / "images" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / "images" / image)
        files = {}
        for column, values in (("object", [2, 3]), ("part", [4, 5, 300])):
            m = np.zeros((24, 24), np.int64)
            y, x = rng.integers(0, 16, size=2)
            m[y:y + 8, x:x + 8] = rng.choice(values)
            write_mask(root / "images" / f"{stem}_{column}.png", m)
            files[column] = f"{stem}_{column}.png"
        rows.append([image, "train", 48, 48, 24, 24, "", files["object"], files["part"], "", str(6 + k % 2), "7"])
    write_csv(root / "index.csv", INDEX_COLUMNS, rows)
    return root


def random_alexnet_weights(torch_home):
    """Random AlexNet weights saved where torchvision's weights mechanism looks for IMAGENET1K_V1 under
    ``torch_home`` (``TORCH_HOME``); returns the state dict."""
    import torchvision
    from torchvision.models import AlexNet_Weights

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoints / AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1])
    return state


PAPER_RUN = {"layers": "conv1,conv5,fc3", "batch_size": 4, "num_workers": 2, "device": "cpu", "thumb": 24,
             "ablation_dense": False, "n_show": 2, "n_study": 2, "n_explain": 2, "n_targets": 3, "n_neighbours": 2,
             "mis_similarity": "pixels",
             "mis_references": 2, "mis_bands": "0.5", "mis_tasks": 5}
"""The tiny paper-profile run's settings: three of AlexNet's layers (features and classifier; fc1/fc2 only add
4096-d eigensolves), small grids and study, and the pixel similarity asked for explicitly (no DreamSim here)."""


@pytest.fixture(scope="session")
def paper_run(tmp_path_factory, tiny_imagenet):
    """``python -m helpers.run --profile paper`` through 08 on the tiny ImageNet and Broden folders, torchvision's
    AlexNet with random weights through its own weights mechanism; the dry run's estimate of each step is
    taken before it. Returns ``(p, params, env, estimates, seconds)``."""
    import time

    from helpers import estimate

    root = tmp_path_factory.mktemp("paper")
    random_alexnet_weights(root / "torch")
    env = {**os.environ, "TORCH_HOME": str(root / "torch")}
    params = {**PAPER_RUN, "data_root": str(tiny_imagenet), "data_dir": str(root / "data"),
              "figures_dir": str(root / "figures"), "broden_root": str(write_tiny_broden(root / "broden"))}
    p = load_profile("paper", **params)
    estimates = estimate.costs(p, [nb.stem.split("_")[0] for nb in numbered_notebooks()])
    cmd = [*runner_command(), "--profile", "paper"]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    PaperRun = namedtuple("PaperRun", "p params env estimates seconds stderr")
    return PaperRun(p, params, env, estimates, time.perf_counter() - start, done.stderr)


@pytest.fixture
def broken_imagenet(tmp_path, tiny_imagenet):
    """A copy of the tiny ImageNet folder whose second validation image is a truncated JPEG."""
    root = tmp_path / "imagenet"
    shutil.copytree(tiny_imagenet, root)
    victim = sorted((root / "val").rglob("*.JPEG"))[1]
    victim.write_bytes(victim.read_bytes()[:600])
    return root, victim


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    """``put(name)``: random weights of a torchvision model, saved where its IMAGENET1K_V1 weights are looked for."""
    from torchvision.models import get_model, get_model_weights

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def put(name):
        torch.manual_seed(0)
        state = get_model(name, weights=None).state_dict()
        for k, v in state.items():  # ViT's head starts at zero: its logits would be constant
            if v.is_floating_point() and not v.any() and k.endswith("weight"):
                state[k] = torch.randn_like(v) * 0.02
        torch.save(state, checkpoints / get_model_weights(name).IMAGENET1K_V1.url.rsplit("/", 1)[-1])
        return state

    return put


@pytest.fixture
def alexnet_cache(tmp_path, monkeypatch):
    """Random AlexNet weights placed where torchvision's weights mechanism looks for them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return random_alexnet_weights(tmp_path / "torch")


EVERY_BASIS = "pca,neuron,ica,nmf,sae,random"
"""The session's smoke run fits every basis, the random baseline too; the other stand-ins run with the default
(PCA, neurons)."""


def _papermill(nb, out, env=None, **params):
    """The papermill command line, as a user runs one notebook alone."""
    import json

    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent)]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    cmd += ["-y", json.dumps({"settings": {k: str(v) for k, v in params.items() if k != "profile"}})]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{nb.name} failed; see {out}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Every notebook run alone with the papermill CLI on the smoke profile, in order."""
    tmp = tmp_path_factory.mktemp("smoke")
    dirs = {"data_dir": tmp / "data", "figures_dir": tmp / "figures"}
    for nb in numbered_notebooks():  # each records the settings it reads (tests/test_notebooks.py checks its cell)
        _papermill(nb, tmp / nb.name, env={TRACE_ENV: str(tmp / "settings"), "HELPERS_NOTEBOOK": nb.stem},
                   profile="smoke", bases=EVERY_BASIS, **dirs)
    return load_profile("smoke", bases=EVERY_BASIS, **{k: str(v) for k, v in dirs.items()})


M, K, THUMB = 10, 3, 6


def fake_grid(rng, m=M, k=K, thumb=THUMB, gap=study.GAP):
    """A grid of m columns and k rows of random thumbnails, white gaps between."""
    out = np.full((k * (thumb + gap) - gap, m * (thumb + gap) - gap), 255, np.uint8)
    for c in range(m):
        for r in range(k):
            out[r * (thumb + gap):r * (thumb + gap) + thumb, c * (thumb + gap):c * (thumb + gap) + thumb] = \
                rng.integers(0, 250, (thumb, thumb))
    return out


def columns(image, m=M):
    return [image[:, box] for box in study.column_boxes(image.shape[1], m)]


@pytest.fixture
def study_profile(tmp_path, monkeypatch):
    """A profile whose grids artifact holds random grids: conv1 (4 per basis) and fc3 (2: d < n_study).

    The grids are declared as made from nothing (their step's declaration, replaced for the test, keys them
    by the layers and their number only), so the study's steps run on them without a sample, bases or index.
    """
    import dataclasses

    import helpers.steps  # noqa: F401  declares every step
    from helpers.pipeline import provenance

    step = provenance.producer("grids")
    monkeypatch.setitem(provenance._DECLARED, (step.notebook, "grids"), dataclasses.replace(
        step, reads=(), key=lambda q: keys.key({"layers": list(q.layers), "n_grids": 5}, {}, ())))
    p = load_profile("smoke", data_dir=str(tmp_path / "data"), layers="conv1,fc3", n_study=4,
                     n_targets=M, n_neighbours=K, thumb=THUMB)
    rng = np.random.default_rng(0)
    key = provenance.expected(p, "grids")
    with store.Build(p.artifact("grids"), key, "the study_profile fixture", profile=p.name) as b:
        files = []
        for layer, n in (("conv1", 5), ("fc3", 2)):
            for basis in ("pca", "neuron"):
                for j in range(n):
                    path = b.partial / layer / f"{basis}_{j + 1:04d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(fake_grid(rng)).save(path)
                    files.append(str(path.relative_to(b.partial)))
        b.commit(files)
    return p


@pytest.fixture
def copy(smoke, tmp_path):
    """A copy of the smoke run's artifacts (times kept), to change as a user would."""
    data = tmp_path / "data" / smoke.data_path.name  # the model's folder
    shutil.copytree(smoke.data_path, data, ignore=shutil.ignore_patterns("notebooks", ".locks"))
    params = {"data_dir": str(data.parent), "figures_dir": str(tmp_path / "figures"), "bases": EVERY_BASIS}
    return Copy(data, tmp_path / "figures" / smoke.data_path.name, params)


class Copy(namedtuple("Copy", "data figures params")):
    """The copied model folder, its figures folder and the settings that read them."""

    def artifact(self, name: str) -> Path:
        """The folder of artifact ``name`` the copy's settings read (``load_profile(...).artifact``)."""
        return load_profile("smoke", **self.params).artifact(name)
