"""The shipped stand-in weights: their records, their refusal when tampered with, and the numbers they give."""
import hashlib
import re
import shutil

import pandas as pd
import pytest
import torch

from helpers import models
from helpers.models import shipped
from helpers.pipeline.settings import ROOT, load_profile


@pytest.mark.parametrize("model,target", [("mini_alexnet", 0.85), ("mini_resnet", 0.85), ("mini_vit", 0.83)])
def test_shipped_weights_match_their_record_hash_and_test_accuracy(model, target):
    """Each shipped checkpoint: its file's SHA-256 is its record's, and its Fashion-MNIST test accuracy,
    measured here, is the record's to the last image."""
    rec = shipped.record(model)
    checkpoint, _ = shipped.paths(model)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == rec["sha256"]
    p = load_profile("quick", model=model)
    net, info = models.load_model(p, device="cpu")
    assert info["id"] == f"sha256:{rec['sha256']}" and info["weights"] == "shipped"
    assert models.state_hash(net) == rec["weights_sha256"]
    test = models.load_dataset(p, "test")
    correct, total = models.correct_count(net, test, device="cpu")
    assert (correct, total) == (rec["test_correct"], rec["test_images"]) == (rec["test_correct"], 10_000)
    assert correct / total >= target
    assert rec["recipe"]["epochs"] == p.train_epochs and rec["recipe"]["seed"] == p.seed
    assert set(rec["recipe"]["code"]) == {"helpers/standins.py", "helpers/training.py"}
    assert rec["trained_with"]["torch"] and rec["trained_with"]["cpu"]


def test_a_tampered_shipped_checkpoint_is_refused_with_the_fix(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(shipped.FOLDER, folder)
    monkeypatch.setattr(shipped, "FOLDER", folder)
    checkpoint = folder / "mini_alexnet.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["features.0.bias"][0] += 1e-3  # a valid checkpoint, other weights
    torch.save(state, checkpoint)
    with pytest.raises(shipped.TamperedWeightsError, match=r"mini_alexnet.pt is not the checkpoint its record "
                                                           r"names.*Restore it \(git checkout -- helpers/models/weights/"
                                                           r"mini_alexnet.pt.*-p retrain=True"):
        models.load_model(load_profile("quick"), device="cpu")
    checkpoint.unlink()
    with pytest.raises(FileNotFoundError, match=r"ships no weights for mini_alexnet .*retrain=True"):
        models.load_model(load_profile("quick"), device="cpu")


def test_retrained_weights_are_compared_with_the_shipped_ones():
    rec = shipped.record("mini_alexnet")
    recipe = rec["recipe"]
    same = shipped.compare("mini_alexnet", rec["weights_sha256"], rec["test_correct"], recipe)
    assert same.startswith("the same weights, bit for bit,") and f"shipped {rec['test_correct']} of 10000" in same
    other = shipped.compare("mini_alexnet", "sha256:0", rec["test_correct"] - 3, recipe)
    assert other.startswith("other weights") and f"{rec['test_correct'] - 3} correct" in other
    smoke = shipped.compare("mini_alexnet", "sha256:0", 50, {**recipe, "epochs": 1})
    assert smoke == "trained with another recipe than the shipped mini_alexnet weights: epochs 1 (shipped: 2)"


def readme_counts() -> dict:
    """The README's quick-profile counts table: ``{(layer, curve): (k80, k99)}``."""
    text = (ROOT / "README.md").read_text()
    header = "| layer | d | PCA pre-ReLU | PCA post-ReLU | neurons pre-ReLU |"
    lines = text[text.index(header):].splitlines()[2:]
    out = {}
    for line in lines:
        if not line.startswith("|"):
            break
        layer, d, *cells = (c.strip() for c in line.strip("|").split("|"))
        for curve, cell in zip(("pca_pre_relu", "pca_post_relu", "neuron_pre_relu"), cells):
            if cell != "—":
                out[(layer, curve)] = tuple(int(v) for v in re.findall(r"\d+", cell))
    return out


def test_the_quick_profiles_counts_are_the_readmes(tmp_path):
    """01-02 of the quick profile for mini_alexnet, as make figures runs them (shipped weights, streamed)."""
    from helpers.run import run

    dirs = {"data_dir": str(tmp_path / "data"), "figures_dir": str(tmp_path / "figures")}
    run("quick", only=["02"], parameters=dirs, say=lambda text: None)
    p = load_profile("quick", **dirs)
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    found = {(r.layer, r.curve): (int(r.k80), int(r.k99)) for r in table.itertuples()}
    expected = readme_counts()
    assert len(expected) == 23 and found == expected
