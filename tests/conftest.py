"""Shared fixtures: tiny data that exercise the real loading code."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from helpers.pipeline import keys, store
from helpers.pipeline.settings import ROOT, TRACE_ENV, load_profile
from helpers.study import stimuli as study

WNIDS = ("n01440764", "n01443537", "n01484850")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


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
    estimates = estimate.costs(p, [nb.stem.split("_")[0] for nb in NOTEBOOKS])
    cmd = [sys.executable, "-m", "helpers.run", "--profile", "paper"]
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
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent)]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{nb.name} failed; see {out}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Every notebook run alone with the papermill CLI on the smoke profile, in order."""
    tmp = tmp_path_factory.mktemp("smoke")
    dirs = {"data_dir": tmp / "data", "figures_dir": tmp / "figures"}
    for nb in NOTEBOOKS:  # each records the settings it reads (tests/test_notebooks.py checks its cell)
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
def study_profile(tmp_path):
    """A profile whose grids artifact holds random grids: conv1 (4 per basis) and fc3 (2: d < n_study)."""
    p = load_profile("smoke", data_dir=str(tmp_path / "data"), layers="conv1,fc3", n_study=4,
                     n_targets=M, n_neighbours=K, thumb=THUMB)
    rng = np.random.default_rng(0)
    key = keys.key({"layers": list(p.layers), "n_grids": 5}, {}, ())
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
    Copy = namedtuple("Copy", "data figures params")
    params = {"data_dir": str(data.parent), "figures_dir": str(tmp_path / "figures"), "bases": EVERY_BASIS}
    return Copy(data, tmp_path / "figures" / smoke.data_path.name, params)
