"""The paper profile end to end (01 to 05), on the real loading code.

torchvision's AlexNet gets random weights through its own weights mechanism (a
file in torch's hub cache), and the images come from a tiny ImageNet-layout
folder of JPEGs: the code a GPU user runs on ImageNet, at toy size.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights

from helpers.pipeline.settings import ROOT, load_profile
from helpers.sampling import open_sample
from tests.images.test_concepts import INDEX_COLUMNS, LABELS, write_csv, write_mask

LAYERS = "conv1,conv5,fc3"  # features and classifier; fc1/fc2 only add 4096-d eigensolves


def test_paper_profile_01_to_05_on_tiny_imagenet(tmp_path, tiny_imagenet, alexnet_cache):
    params = {"profile": "paper", "data_root": str(tiny_imagenet), "data_dir": str(tmp_path / "data"),
              "figures_dir": str(tmp_path / "figures"), "layers": LAYERS, "batch_size": 4,
              "num_workers": 2, "device": "cpu", "thumb": 24, "ablation_dense": False}
    for name in ("01_sample", "02_pca", "03_index", "04_visualize", "05_ablation"):
        pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                            parameters=params, cwd=str(ROOT / "notebooks"), progress_bar=False)
    p = load_profile("paper", data_dir=params["data_dir"], figures_dir=params["figures_dir"])
    meta = json.loads((p.artifact("sample") / "meta.json").read_text())
    assert meta["inputs"]["model"] == "torchvision:AlexNet_Weights.IMAGENET1K_V1"
    images = meta["inputs"]["images"]
    assert images["dataset"]["root"] == str(tiny_imagenet / "train") and images["dataset"]["files"] == 12
    assert images["dataset"]["classes"] == 3 and images["n"] == 12
    assert meta["shapes"]["conv1"] == [64, 55, 55] and meta["shapes"]["fc3"] == [1000]
    X, loc = open_sample(p.artifact("sample"), "conv1")
    assert X.shape == (12, 64) and (np.asarray(X) < 0).any()
    assert sorted(np.asarray(loc[:, 0])) == list(range(12))
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    assert set(table.layer) == set(LAYERS.split(","))
    executed = (tmp_path / "02_pca.ipynb").read_text()
    assert "paper_k80" in executed  # the reproduced counts printed beside the paper's
    # 03-05: RGB patches of AlexNet's receptive fields, the AlexNet prefix/suffix split
    grid = np.asarray(Image.open(p.artifact("grids") / "conv5" / "pca_0001.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3
    ablation = pd.read_csv(p.figure("ablation.csv"))
    assert set(ablation.layer) == set(LAYERS.split(","))
    assert "the paper's (torchvision AlexNet, ImageNet val): 56.52 %" in (tmp_path / "05_ablation.ipynb").read_text()


DEMO_LAYERS = {  # a few layers each, with a short rest of the network for the sweep
    "resnet18": "conv1,layer4.1.conv2,layer4,fc",
    "resnet50": "layer4.2.conv3,fc",
    "vit_b_16": "encoder.layers.encoder_layer_11.mlp.3,heads.head",  # (self-attention sites: mini_vit, the same class)
}


@pytest.fixture
def tiny_broden(tmp_path):
    """A Broden folder of six ADE20K-like images (48 px JPEGs, 24 px RG-encoded masks) and one other subset."""
    root = tmp_path / "broden"
    root.mkdir()
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


@pytest.mark.parametrize("model", list(DEMO_LAYERS))
def test_the_demos_networks_run_01_to_05_on_tiny_imagenet(model, tmp_path, tiny_imagenet, weights_cache,
                                                          tiny_broden):
    state = weights_cache(model)
    layers = DEMO_LAYERS[model]
    params = {"profile": "paper", "model": model, "data_root": str(tiny_imagenet),
              "data_dir": str(tmp_path / "data"), "figures_dir": str(tmp_path / "figures"), "layers": layers,
              "batch_size": 6, "device": "cpu", "thumb": 16, "ablation_dense": False, "n_show": 2, "n_study": 2}
    for name in ("01_sample", "02_pca", "03_index", "04_visualize", "05_ablation"):
        pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                            parameters=params, cwd=str(ROOT / "notebooks"), progress_bar=False)
    p = load_profile("paper", model=model, layers=layers, data_dir=params["data_dir"],
                     figures_dir=params["figures_dir"])
    assert p.artifact("sample").parent.name == model  # one folder per model
    meta = json.loads((p.artifact("sample") / "meta.json").read_text())
    weights = type(get_model_weights(model).IMAGENET1K_V1).__name__
    assert meta["inputs"]["model"] == f"torchvision:{weights}.IMAGENET1K_V1"
    assert sorted(meta["shapes"]) == sorted(layers.split(","))
    first = layers.split(",")[0]
    X, loc = open_sample(p.artifact("sample"), first)
    assert X.shape == (12, meta["shapes"][first][0]) and (np.asarray(loc[:, 1]) >= 0).all()
    grid = np.asarray(Image.open(p.artifact("grids") / first / "pca_0001.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3
    ablation = pd.read_csv(p.figure("ablation.csv"))
    assert list(ablation.layer.unique()) == layers.split(",")
    assert ablation[ablation.n_ablated == 0].top1.nunique() == 1  # the same unablated accuracy everywhere
    assert set(state) == set(torch.load(next((tmp_path / "torch").rglob("*.pth")), weights_only=True))
    if model != "resnet18":
        return
    # 08 on Broden, with the reference code's layer (layer4), as on the paper profile
    pm.execute_notebook(str(ROOT / "notebooks" / "08_compositional.ipynb"), str(tmp_path / "08.ipynb"),
                        parameters={**params, "broden_root": str(tiny_broden), "n_explain": 2},
                        cwd=str(ROOT / "notebooks"), progress_bar=False)
    table = pd.read_csv(p.figure("compositional_explanations.csv"), keep_default_na=False)
    assert list(table.layer.unique()) == ["conv1", "layer4.1.conv2", "layer4"]  # fc has no map
    names = {n for _, n, _ in LABELS}
    used = {w for f in table.formula for w in f.replace("(", "").replace(")", "").split()} - {"OR", "AND", "NOT"}
    assert used and used <= names
    meta = json.loads((p.artifact("compositional") / "meta.json").read_text())
    assert meta["probe_images"] == 6  # the ADE20K subset only
    assert meta["inputs"]["concepts"]["subset"] == "ade20k"


def test_a_researchers_own_model_runs_01_to_04(tmp_path):
    """``-p model=<module>:<callable>`` from a file outside the package; a wrong path lists close ones."""
    (tmp_path / "my_nets.py").write_text(
        "import torch\n"
        "from torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())\n"
        "        self.head = nn.Linear(16, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(x).mean((2, 3)))\n\n\n"
        "def make():\n"
        "    return Net()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "helpers.run", "--profile", "smoke", "-p", "model=my_nets:make",
            "-p", f"data_dir={tmp_path / 'data'}", "-p", f"figures_dir={tmp_path / 'figures'}"]
    wrong = subprocess.run(base + ["-p", "layers=body.3,body.9", "--only", "01"], env=env, cwd=str(ROOT),
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    assert "layer 'body.9' is not a module of Net; closest module paths: ['body.4', 'body.3'" in wrong.stderr
    done = subprocess.run(base + ["--only", "01", "02", "03", "04"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    p = load_profile("smoke", model="my_nets:make", layers="body.0,body.3,head",
                     data_dir=str(tmp_path / "data"), figures_dir=str(tmp_path / "figures"))
    meta = json.loads((p.artifact("sample") / "meta.json").read_text())
    assert meta["inputs"]["model"].startswith("my_nets:make@sha256:")
    assert sorted(meta["shapes"]) == ["body.0", "body.3", "head"]  # the fallback's default layers
    assert meta["sites"]["body.0"]["relu"] and not meta["sites"]["head"]["relu"]
    assert (p.figures_path / "fig_grids_body.3.png").exists() and (p.figures_path / "fig_grids_body.3.pdf").exists()
