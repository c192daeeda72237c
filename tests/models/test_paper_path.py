"""The paper profile end to end (01 to 08, through the runner), on the real loading code.

torchvision's AlexNet gets random weights through its own weights mechanism (a
file in torch's hub cache), and the images come from a tiny ImageNet-layout
folder of JPEGs: the code a GPU user runs on ImageNet, at toy size.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights

from helpers.pipeline.settings import ROOT, load_profile
from helpers.sampling import open_sample
from tests.conftest import notebooks_folder, runner_command, write_tiny_broden
from tests.images.test_concepts import LABELS

OUTPUTS = {  # every figure (PNG and PDF) and table of 01-08 on the paper profile with torchvision's AlexNet
    "02": ["fig05_explained_variance", "explained_variance_counts.csv", "explained_variance_vs_published.csv"],
    "04": ["fig_grids_conv1", "fig_grids_conv5", "fig_grids_fc3", "fig12_toy_distance_vs_activation"],
    "05": ["fig06_ablation", "ablation.csv", "ablation_vs_published.csv"],
    "06": ["fig14_study_trial"],
    "07": ["fig07_user_study", "user_study_accuracy.csv", "user_study_tests.csv", "user_study_vs_published.csv",
           "machine_interpretability.csv", "fig_machine_interpretability"],
    "08": ["fig_compositional_iou", "fig_compositional_iou_by_length", "fig_compositional_examples",
           "compositional_explanations.csv", "compositional_vs_ablation.csv"],
}


def parses(path) -> bool:
    """A PNG that PIL verifies, a PDF with its header and end marker, a CSV pandas reads with rows."""
    if path.suffix == ".png":
        with Image.open(path) as im:
            im.verify()
        return True
    if path.suffix == ".pdf":
        data = path.read_bytes()
        return data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]
    return len(pd.read_csv(path)) > 0


def test_the_paper_profile_runs_01_to_08_through_the_runner(paper_run):
    p = paper_run.p
    meta = json.loads((p.artifact("sample") / "meta.json").read_text())
    assert meta["inputs"]["model"] == "torchvision:AlexNet_Weights.IMAGENET1K_V1"
    images = meta["inputs"]["images"]
    assert images["dataset"]["root"] == str(Path(paper_run.params["data_root"]) / "train")
    assert images["dataset"]["files"] == 12 and images["dataset"]["classes"] == 3 and images["n"] == 12
    assert meta["shapes"]["conv1"] == [64, 55, 55] and meta["shapes"]["fc3"] == [1000]
    X, loc = open_sample(p.artifact("sample"), "conv1")
    assert X.shape == (12, 64) and (np.asarray(X) < 0).any()
    assert sorted(np.asarray(loc[:, 0])) == list(range(12))
    executed = (p.data_path / "notebooks" / "02_pca.ipynb").read_text()
    assert "paper_k80" in executed  # the reproduced counts printed beside the paper's
    grid = np.asarray(Image.open(p.artifact("grids") / "conv5" / "pca_0001.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3  # RGB patches of AlexNet's receptive fields
    assert "the paper's (torchvision AlexNet, ImageNet val): 56.52 %" in \
        (p.data_path / "notebooks" / "05_ablation.ipynb").read_text()
    names = [n + ext if "." not in n else n for names in OUTPUTS.values() for n in names for ext in (".png", ".pdf")]
    assert sorted(n for n in names if not (p.figures_path / n).exists()) == []
    recorded = json.loads((p.figures_path / "provenance.json").read_text())
    assert sorted(set(names) - set(recorded) - {"fig12_toy_distance_vs_activation.png",
                                                 "fig12_toy_distance_vs_activation.pdf"}) == []  # a toy: no artifact
    for path in p.figures_path.iterdir():
        assert path.suffix not in (".png", ".pdf", ".csv") or parses(path), path.name
    units = pd.read_csv(p.figure("compositional_explanations.csv"), keep_default_na=False)
    assert list(units.layer.unique()) == ["conv1", "conv5"]  # fc3 has no map
    assert json.loads((p.artifact("compositional") / "meta.json").read_text())["probe_images"] == 6  # ADE20K
    assert not (p.artifact("compositional") / "maps.tmp.npy").exists()  # the scratch maps are not kept
    machine = json.loads((p.artifact("machine") / "meta.json").read_text())
    assert machine["similarity"] == "pixels"


def test_the_dry_runs_disk_estimate_is_within_its_margin_of_what_the_run_wrote(paper_run):
    """Each step's estimate (made before the run) against the bytes its artifacts hold afterwards."""
    from helpers.pipeline import provenance
    from helpers.pipeline.costs import DISK_MARGIN, DISK_SLACK

    p, report = paper_run.p, []
    for number, cost in paper_run.estimates.items():
        wrote = sum(f.stat().st_size for a in provenance.notebooks()[number].makes if provenance.applies(p, a)
                    for f in p.artifact(a).rglob("*") if f.is_file())
        report.append((number, cost.disk, wrote))
    print("\n".join(f"{n}: estimated {e:,} B, wrote {w:,} B" for n, e, w in report))
    assert [n for n, e, w in report if abs(e - w) > max(DISK_MARGIN * w, DISK_SLACK)] == [], report
    assert sum(e for _, e, _ in report) > 0.5 * sum(w for _, _, w in report)


def test_a_run_without_broden_or_dreamsim_is_refused_before_any_kernel_and_loses_nothing(paper_run, monkeypatch,
                                                                                          tmp_path):
    from helpers import run
    from helpers.images import broden
    from helpers.study import mis

    monkeypatch.setenv("TORCH_HOME", paper_run.env["TORCH_HOME"])
    monkeypatch.setattr(broden, "DEFAULT_DIR", tmp_path / "no-broden")  # no Broden where the profile looks
    folders = [paper_run.p.data_path, paper_run.p.figures_path]

    def files():
        return {f: (f.stat().st_size, f.stat().st_mtime_ns) for d in folders for f in d.rglob("*") if f.is_file()}

    before = files()
    params = {k: v for k, v in paper_run.params.items() if k != "broden_root"}
    with pytest.raises(ValueError) as e:
        run.run("paper", parameters=params, say=lambda text: None)
    assert "08_compositional needs concepts for dataset='imagenet': fetch Broden with `make broden`" in str(e.value)
    assert "or leave 08_compositional out: --only 01 02 03 04 05 06 07" in str(e.value)
    found = importlib.util.find_spec
    monkeypatch.setattr(mis.importlib.util, "find_spec", lambda name: None if name == "dreamsim" else found(name))
    params = {k: v for k, v in paper_run.params.items() if k != "mis_similarity"}  # the profile's: dreamsim
    with pytest.raises(ValueError) as e:
        run.run("paper", parameters=params, say=lambda text: None)
    assert str(e.value).startswith("DreamSim: the dreamsim package is not installed (setting "
                                   "mis_similarity='dreamsim' (profile paper)")
    assert "pip install -e '.[paper]'" in str(e.value) and "-p mis_similarity=pixels" in str(e.value)
    assert files() == before  # nothing already computed is touched: every file as it was


DEMO_LAYERS = {  # a few layers each, with a short rest of the network for the sweep
    "resnet18": "conv1,layer4.1.conv2,layer4,fc",
    "resnet50": "layer4.2.conv3,fc",
    "vit_b_16": "encoder.layers.encoder_layer_11.mlp.3,heads.head",  # (self-attention sites: mini_vit, the same class)
}


@pytest.fixture
def tiny_broden(tmp_path):
    """A Broden folder of six ADE20K-like images and one other subset (:func:`tests.conftest.write_tiny_broden`)."""
    return write_tiny_broden(tmp_path / "broden")


@pytest.mark.parametrize("model", list(DEMO_LAYERS))
def test_the_demos_networks_run_01_to_05_on_tiny_imagenet(model, tmp_path, tiny_imagenet, weights_cache,
                                                          tiny_broden):
    state = weights_cache(model)
    layers = DEMO_LAYERS[model]
    params = {"profile": "paper", "model": model, "data_root": str(tiny_imagenet),
              "data_dir": str(tmp_path / "data"), "figures_dir": str(tmp_path / "figures"), "layers": layers,
              "batch_size": 6, "device": "cpu", "thumb": 16, "ablation_dense": False, "n_show": 2, "n_study": 2}
    params["settings"] = {k: v for k, v in params.items() if k != "profile"}  # what a cell lacks, by name
    for name in ("01_sample", "02_pca", "03_index", "04_visualize", "05_ablation"):
        pm.execute_notebook(str(notebooks_folder() / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                            parameters=params, cwd=str(notebooks_folder()), progress_bar=False)
    p = load_profile("paper", **params["settings"])  # the settings the notebooks ran with: their artifacts' ids
    assert p.artifact("sample").parent.parent.name == model  # one folder per model
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
    pm.execute_notebook(str(notebooks_folder() / "08_compositional.ipynb"), str(tmp_path / "08.ipynb"),
                        parameters={**params, "broden_root": str(tiny_broden), "n_explain": 2,
                                    "settings": {**params["settings"], "broden_root": str(tiny_broden)}},
                        cwd=str(notebooks_folder()), progress_bar=False)
    table = pd.read_csv(p.figure("compositional_explanations.csv"), keep_default_na=False)
    assert list(table.layer.unique()) == ["conv1", "layer4.1.conv2", "layer4"]  # fc has no map
    names = {n for _, n, _ in LABELS}
    used = {w for f in table.formula for w in f.replace("(", "").replace(")", "").split()} - {"OR", "AND", "NOT"}
    assert used and used <= names
    p = load_profile("paper", **params["settings"], broden_root=str(tiny_broden))  # 08's settings: its id
    meta = json.loads((p.artifact("compositional") / "meta.json").read_text())
    assert meta["probe_images"] == 6  # the ADE20K subset only
    assert meta["inputs"]["concepts"]["subset"] == "ade20k"


def test_a_researchers_own_model_runs_01_to_04(tmp_path, monkeypatch):
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
    base = [*runner_command(), "--profile", "smoke", "-p", "model=my_nets:make",
            "-p", f"data_dir={tmp_path / 'data'}", "-p", f"figures_dir={tmp_path / 'figures'}"]
    wrong = subprocess.run(base + ["-p", "layers=body.3,body.9", "--only", "01"], env=env, cwd=str(ROOT),
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    assert "layer 'body.9' is not a module of Net; closest module paths: ['body.4', 'body.3'" in wrong.stderr
    done = subprocess.run(base + ["--only", "01", "02", "03", "04"], env=env, cwd=str(ROOT),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.syspath_prepend(str(tmp_path))  # the model's id, which names its folders, is its weights' hash
    p = load_profile("smoke", model="my_nets:make", layers="body.0,body.3,head",
                     data_dir=str(tmp_path / "data"), figures_dir=str(tmp_path / "figures"))
    meta = json.loads((p.artifact("sample") / "meta.json").read_text())
    assert meta["inputs"]["model"].startswith("my_nets:make@sha256:")
    assert sorted(meta["shapes"]) == ["body.0", "body.3", "head"]  # the fallback's default layers
    assert meta["sites"]["body.0"]["relu"] and not meta["sites"]["head"]["relu"]
    assert (p.figures_path / "fig_grids_body.3.png").exists() and (p.figures_path / "fig_grids_body.3.pdf").exists()
