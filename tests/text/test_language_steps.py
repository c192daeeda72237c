"""Language models through the method's steps: mini_gpt on the fortunes with the runner (01-05; 06-08 skipped
with one line), and a Hugging Face GPT-2 of random weights and a tokenizer trained here, saved with
save_pretrained and read back through from_pretrained, through the same steps at toy size."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from sklearn.decomposition import PCA

from helpers import controls, run, steps  # noqa: F401  the catalogue declares every step
from helpers.ablation.accuracy import make_ablation, read_rows
from helpers.bases.fit import layer_bases, make_bases
from helpers.grids.visualize import make_grids
from helpers.models import causal_lm
from helpers.models.inputs import selection
from helpers.models.loading import load_model
from helpers.pipeline.settings import load_profile
from helpers.sampling import make_sample, open_sample
from helpers.search.index import make_index
from helpers.text import corpus, tokens

LAYERS = "blocks.0.mlp.fc,blocks.2.mlp.fc"
SMALL = {"n_sample": 300, "n_eval": 24, "ablation_eval": 12, "index_cap": 1000, "n_show": 2, "n_study": 2,
         "layers": LAYERS, "bases": "pca,neuron,random"}


@pytest.fixture(scope="module")
def mini_gpt_run(tmp_path_factory):
    """``python -m helpers.run -p model=mini_gpt`` at toy size, into a temporary folder, then ``python -m
    helpers.controls --models mini_gpt`` with the same settings: what they said, the profile, the controls folder."""
    folder = tmp_path_factory.mktemp("mini_gpt")
    params = {**SMALL, "data_dir": str(folder / "data"), "figures_dir": str(folder / "figures")}
    said = []
    run.run("quick", parameters={"model": "mini_gpt", **params}, say=said.append)
    controls_folder = controls.run_controls("quick", ["mini_gpt"], params, say=said.append)
    return said, load_profile("quick", model="mini_gpt", **params), controls_folder


def test_the_runner_makes_01_to_05_for_mini_gpt_and_skips_06_to_08_with_one_line(mini_gpt_run):
    said, p, _ = mini_gpt_run
    assert (p.dataset, p.eval_split, p.retrain) == ("fortunes", "test", False)  # the model chose its text
    skipped = [s for s in said if "skipped" in s][:1]
    assert skipped == ["06_user_study, 07_user_study_analysis, 08_compositional skipped: 06-08 are for networks "
                       "that read images; model='mini_gpt' is a language model, whose steps end at 05 (docs/text.md)."]
    assert "01_sample, 02_pca, 03_index, 04_visualize, 05_ablation" in said[1]
    for name in ("fig05_explained_variance", "fig06_ablation", "fig06_ablation_loss", "fig_grids_blocks.0.mlp.fc"):
        for ext in ("png", "pdf"):
            assert Path(f"{p.figure(name)}.{ext}").stat().st_size > 1000
    grids = p.artifact("grids") / "blocks.2.mlp.fc"
    for basis in ("pca", "neuron"):
        assert (grids / f"{basis}_0001.png").stat().st_size > 1000
        page = (grids / f"{basis}_0002.html").read_text()
        assert page.count("<tr>") == 1 + p.n_neighbours and page.count("<mark>") == p.n_targets * p.n_neighbours
        assert "<|endoftext|>" not in page  # escaped


def test_the_counts_table_is_scikit_learns_pca_of_the_sampled_neurons(mini_gpt_run):
    _, p, _ = mini_gpt_run
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    for layer in LAYERS.split(","):
        X, loc = open_sample(p.artifact("sample"), layer)
        assert X.shape == (300, 512) and (loc[:, 2] == 0).all() and loc[:, 1].max() < 64  # (sequence, position, 0)
        ratio = PCA().fit(np.asarray(X, np.float64)).explained_variance_ratio_
        expected = [int(np.searchsorted(np.cumsum(ratio), t) + 1) for t in (0.8, 0.99)]
        row = table[(table.layer == layer) & (table.curve == "pca_pre_relu")].iloc[0]
        assert [row.k80, row.k99] == expected


def test_the_sweep_removing_every_pc_is_the_layer_replaced_by_its_mean(mini_gpt_run):
    _, p, _ = mini_gpt_run
    rows = pd.DataFrame(read_rows(p.figure("ablation.csv")))
    assert list(rows.columns) == ["layer", "basis", "order", "n_ablated", "top1", "loss", "loss_increase"]
    net, _ = load_model(p, device="cpu", train=False)
    dataset, indices = selection(p, "ablation")
    assert len(indices) == 12
    layer = "blocks.0.mlp.fc"
    X, _ = open_sample(p.artifact("sample"), layer)
    mean = torch.as_tensor(np.asarray(X, np.float64).mean(0), dtype=torch.float32)
    handle = net.get_submodule(layer).register_forward_hook(lambda m, a, out: mean.expand_as(out))  # independent
    try:
        replaced = causal_lm.next_token(net, dataset.sequences[indices])
    finally:
        handle.remove()
    every = rows[(rows.layer == layer) & (rows.basis == "pca") & (rows.n_ablated == 512)]
    assert len(every) == 2 and np.allclose(every.loss, replaced["loss"], rtol=1e-4)
    unablated = rows[rows.n_ablated == 0]
    assert (unablated.loss_increase == 0).all() and unablated.loss.nunique() == 1
    assert unablated.top1.iloc[0] == causal_lm.next_token(net, dataset.sequences[indices])["top1"]


def test_the_controls_of_mini_gpt_hold_its_untrained_network_and_the_random_basis(mini_gpt_run):
    said, p, folder = mini_gpt_run
    assert "controls: mini_gpt:untrained (untrained)" in said
    assert sorted(f.name for f in folder.glob("controls_*.csv")) == ["controls_ablation.csv",
                                                                      "controls_explained_variance.csv",
                                                                      "controls_summary.csv"]  # no 06-08
    ablation = pd.read_csv(folder / "controls_ablation.csv")
    assert set(ablation.weights) == {"trained", "untrained"} and set(ablation.basis) == {"pca", "neuron", "random"}
    untrained = load_profile("quick", model="mini_gpt:untrained", **{k: v for k, v in SMALL.items()},
                             data_dir=str(p.data_path.parent), figures_dir=str(p.figures_path.parent))
    own = pd.read_csv(untrained.figure("ablation.csv"))
    mine = ablation[ablation.weights == "untrained"].drop(columns=["model", "weights"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, own)
    base = ablation[ablation.n_ablated == 0].groupby("weights").loss.first()
    assert base.untrained > base.trained + 2  # random weights predict next tokens far worse (nats per token)
    summary = pd.read_csv(folder / "controls_summary.csv")
    increase = summary[summary.yardstick == "loss increase (nats), top 10 % of vectors ablated"]
    assert len(increase) == 6 and increase.value.notna().all()  # 2 networks x 3 bases
    assert (Path(f"{folder / 'fig_controls'}.png")).stat().st_size > 1000


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A GPT-2 of random weights (2 blocks of width 32, 32 positions) with a 400-token BPE of the fortunes, saved
    with save_pretrained: a folder as a hub model's."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = tokens.train_tokenizer(corpus.fortunes("train").documents[:2000], vocab_size=400)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=tokens.END_OF_TEXT)
    fast.save_pretrained(folder)
    config = transformers.GPT2Config(vocab_size=400, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def test_a_hugging_face_gpt2_runs_the_steps_01_to_05(tiny_gpt2, tmp_path):
    p = load_profile("quick", model=f"hf:{tiny_gpt2}", n_sample=200, n_eval=8, ablation_eval=6, index_cap=200,
                     n_show=1, n_study=1, data_dir=str(tmp_path / "data"), figures_dir=str(tmp_path / "figures"))
    assert p.layers == ("transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc") and p.dataset == "fortunes"
    sample = make_sample(p)
    assert sample["shapes"] == {layer: [128, 32, 1] for layer in p.layers}  # 4 x 32 neurons, 32 positions
    make_bases(p)
    make_index(p)
    grids = make_grids(p)
    assert sum(f.endswith(".html") for f in grids["files"]) == 2 * 2  # a table per grid: 2 layers x 2 bases
    rows = make_ablation(p)
    assert {r["layer"] for r in rows} == set(p.layers) and all("loss_increase" in r for r in rows)
    # the vectors sampled are the MLP's hidden units at the recorded positions, read independently
    net, _ = load_model(p, device="cpu", train=False)
    X, loc = open_sample(p.artifact("sample"), p.layers[1])
    dataset, _ = selection(p, "sample")
    found = causal_lm.read_positions(net, dataset.sequences[loc[:20, 0]], loc[:20, 1], [p.layers[1]])[p.layers[1]]
    np.testing.assert_allclose(np.asarray(X[:20]), found, rtol=1e-5, atol=1e-5)
    fitted = layer_bases(p.artifact("bases"), p.layers[0], p.bases)
    assert set(fitted) == {"pca", "neuron"} and fitted["pca"].components_.shape == (128, 128)
    # its untrained control: the same configuration, seeded random weights, an id of its own
    _, info = load_model(p, device="cpu", train=False)
    control = load_profile("quick", model=f"hf:{tiny_gpt2}:untrained", seed=3)
    _, untrained = load_model(control, device="cpu", train=False)
    assert untrained["weights"] == "untrained (seed 3)" and untrained["id"] != info["id"]
    assert load_model(control, device="cpu", train=False)[1]["id"] == untrained["id"]
