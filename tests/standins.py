"""What a smoke run of 01-08 for another stand-in must have made (tests/test_notebooks.py, tests/test_controls.py)."""
import json
import math

import matplotlib.image
import pandas as pd


def check_standin_run(p, fitted: set) -> None:
    """Profile ``p``'s run of 01-08 made every table and figure, for its model's layers and position kinds;
    ``fitted``: the bases 02 fitted (the machine scores add the random baseline)."""
    model = p.model.split(":")[0]
    assert not p.artifact("model").exists()  # shipped or untrained weights: nothing trained
    assert p.figures_path.name == p.data_path.name == p.model.replace(":", "-")
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    assert list(table.layer.unique()) == list(p.layers)
    assert set(table.curve) == {f"{b}_pre_relu" for b in fitted}  # no ReLU module takes these outputs
    ablation = pd.read_csv(p.figure("ablation.csv"))
    assert list(ablation.layer.unique()) == list(p.layers)
    rows = math.ceil(len(p.layers) / 4)  # of panels, 420 px each
    assert matplotlib.image.imread(str(p.figure("fig06_ablation")) + ".png").shape[0] > 350 * rows
    for layer in p.layers:
        assert (p.figures_path / f"fig_grids_{layer}.png").exists()
    sample = json.loads((p.artifact("sample") / "meta.json").read_text())
    kinds = {layer: s["kind"] for layer, s in sample["sites"].items()}
    assert kinds[p.layers[-1]] == "vector"
    assert set(kinds.values()) == ({"map", "vector"} if model == "mini_resnet" else {"map", "tokens", "vector"})
    answers = pd.read_csv(p.figure("user_study_accuracy.csv"))
    assert set(answers.layer) == set(p.layers)
    scored = pd.read_csv(p.figure("machine_interpretability.csv"))  # the random baseline, fitted by 02 or not
    assert set(scored.basis) == fitted | {"random"} and set(scored.layer) == set(p.layers)
    explained = pd.read_csv(p.figure("compositional_explanations.csv"), keep_default_na=False)
    assert list(explained.layer.unique()) == [l for l in p.layers if kinds[l] != "vector"]
    assert (explained.iou > 0).mean() > 0.5
