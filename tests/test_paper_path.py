"""The paper profile end to end (01 to 05), on the real loading code.

torchvision's AlexNet gets random weights through its own weights mechanism (a
file in torch's hub cache), and the images come from a tiny ImageNet-layout
folder of JPEGs: the code a GPU user runs on ImageNet, at toy size.
"""
import json

import numpy as np
import pandas as pd
import papermill as pm
from PIL import Image

from helpers.config import ROOT, load_profile
from helpers.sampling import open_sample

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
