"""python -m helpers.controls on smoke: an untrained network and the random basis through 02-08, in the tables."""
import numpy as np
import pandas as pd
import pytest

from helpers import controls
from helpers.pipeline.settings import load_profile
from standins import check_standin_run


def test_with_random_and_variants():
    assert controls.with_random(None) == "pca,neuron,random"
    assert controls.with_random("pca,sae") == "pca,sae,random"
    assert controls.with_random("pca,random,neuron") == "pca,random,neuron"
    assert controls.variants(["mini_vit"]) == [("mini_vit", "mini_vit", "trained"),
                                               ("mini_vit", "mini_vit:untrained", "untrained")]
    with pytest.raises(ValueError, match="--models"):
        controls.run_controls("smoke", ["mini_alexnet"], {"model": "mini_vit"})


def test_untrained_network_and_random_basis_through_02_to_08(tmp_path):
    """The vision transformer (shipped weights) and its untrained control through 01-08 on smoke, the random
    basis among the bases: every yardstick's table gets both networks' rows and the random basis'."""
    layers = "conv_proj,encoder.layers.encoder_layer_1.mlp.3,encoder.layers.encoder_layer_3.self_attention,heads.head"
    settings = {"data_dir": str(tmp_path / "data"), "figures_dir": str(tmp_path / "figures"), "retrain": False,
                "layers": layers}  # a patch map, tokens of both kinds of site, the head's vector
    folder = controls.run_controls("smoke", ["mini_vit"], settings)
    assert folder == tmp_path / "figures"
    trained = load_profile("smoke", model="mini_vit", bases="pca,neuron,random", **settings)
    untrained = load_profile("smoke", model="mini_vit:untrained", bases="pca,neuron,random", **settings)
    check_standin_run(trained, {"pca", "neuron", "random"})
    assert untrained.data_path != trained.data_path and not untrained.artifact("model").exists()  # nothing trained
    assert sorted(controls.tables()) == ["ablation", "compositional", "explained_variance", "machine_interpretability"]
    for name in controls.tables():
        table = pd.read_csv(folder / f"controls_{name}.csv")
        assert set(table.weights) == {"trained", "untrained"}, name
        assert set(table.model) == {"mini_vit"}
        basis = table.curve.str.split("_").str[0] if name == "explained_variance" else table.basis
        assert {"pca", "neuron", "random"} <= set(basis[table.weights == "untrained"]), name
    # the untrained rows are the untrained run's own tables, not copies of the trained one's
    ablation = pd.read_csv(folder / "controls_ablation.csv")
    own = pd.read_csv(untrained.figure("ablation.csv"))
    mine = ablation[ablation.weights == "untrained"].drop(columns=["model", "weights"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, own)
    trained_top1 = ablation[(ablation.weights == "trained") & (ablation.n_ablated == 0)].top1.iloc[0]
    untrained_top1 = ablation[(ablation.weights == "untrained") & (ablation.n_ablated == 0)].top1.iloc[0]
    assert untrained_top1 < trained_top1  # seeded random weights are near chance (10 classes)
    summary = pd.read_csv(folder / "controls_summary.csv")
    assert list(summary.columns) == ["model", "weights", "basis", "yardstick", "value"]
    yardsticks = set(summary.yardstick)
    assert {"vectors for 80 % of variance (share of d)", "top-1 drop, top 10 % of vectors ablated",
            "compositional IoU (mean over units)"} <= yardsticks
    assert any(y.startswith("held-out queries") for y in yardsticks)
    assert any(y.startswith("grid observer (adjacent repeats: grid)") for y in yardsticks)
    machine = summary[summary.yardstick.str.startswith(("held", "grid"))]
    assert machine.value.between(0, 1).all()
    for weights in ("trained", "untrained"):
        for basis in ("pca", "neuron", "random"):
            assert ((summary.weights == weights) & (summary.basis == basis)).sum() == len(yardsticks), (weights, basis)
    for name in ("fig_controls", "fig_controls_machine_mini_vit"):
        for ext in (".png", ".pdf"):
            assert (folder / f"{name}{ext}").stat().st_size > 1000
    # a second call reuses every artifact: only the report is rewritten, with the same numbers
    before = summary.copy()
    controls.report("smoke", ["mini_vit"], {**settings, "bases": "pca,neuron,random"})
    pd.testing.assert_frame_equal(pd.read_csv(folder / "controls_summary.csv"), before)


def test_summary_numbers_are_the_tables_means():
    """The summary's Fig. 5 and Fig. 6 numbers against a hand computation on a small table."""
    counts = pd.DataFrame({"layer": ["a", "a", "b", "b"], "d": [10, 10, 20, 20],
                           "curve": ["pca_pre_relu", "neuron_pre_relu"] * 2, "k80": [2, 8, 4, 10], "k99": 0,
                           "model": "m", "weights": "trained"})
    rows = []
    for layer, d in (("a", 10), ("b", 20)):
        for n in (0, 1, 2, 3, d):
            rows.append({"layer": layer, "basis": "pca", "order": "descending", "n_ablated": n,
                         "top1": 0.9 - 0.1 * n / d * 10 if n else 0.9})
    ablation = pd.DataFrame(rows).assign(model="m", weights="trained")
    empty = pd.DataFrame(columns=["model", "weights", "measure", "basis", "score", "layer", "iou"])
    out = controls.summary({"explained_variance": counts, "ablation": ablation, "machine_interpretability": empty,
                            "compositional": empty})
    share = out[out.yardstick.str.startswith("vectors")].set_index("basis").value
    assert share["pca"] == pytest.approx((2 / 10 + 4 / 20) / 2) and share["neuron"] == pytest.approx((0.8 + 0.5) / 2)
    drop = out[out.yardstick.str.startswith("top-1")].value.iloc[0]
    # a: top 10 % of 10 = 1 vector -> 0.9 - 0.8; b: 2 of 20 -> 0.9 - 0.8
    assert drop == pytest.approx(np.mean([0.1, 0.1]))


def test_command_line_errors_are_one_line(capsys):
    assert controls.main(["--profile", "smoke", "-p", "model=mini_vit"]) == 1
    assert capsys.readouterr().err.strip() == "error: -p model=... is not a control setting; name the networks with --models."
    assert controls.main(["--profile", "smoke", "--models", "mini_alexnet", "-p", "mis_bands=0.9"]) == 1
    assert "mis_bands" in capsys.readouterr().err
