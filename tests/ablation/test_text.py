"""Ablation in causal LMs, on the shipped mini_gpt and the fortunes' test split: the package's PCA of sampled MLP
neurons against scikit-learn, and removal of every direction against the layer replaced by its mean."""
import numpy as np
import pytest
import torch
import transformers
from sklearn.decomposition import PCA

from helpers.ablation import text
from helpers.ablation.removal import Removal
from helpers.bases import curves
from helpers.bases.pca import NeuronBasis, PCABasis
from helpers.models import causal_lm, lm_training

SITE = "blocks.1.mlp.fc"


@pytest.fixture(scope="module")
def shipped():
    """mini_gpt, 256 held-out sequences, and its block 1 neurons at one seeded position per test sequence."""
    net, tokenizer, rec = lm_training.load_shipped()
    test = lm_training.sequences(rec["recipe"], tokenizer, "test").numpy()
    positions = np.random.default_rng(0).integers(0, test.shape[1], len(test))  # one per sequence
    X = causal_lm.read_positions(net, test, positions, [SITE])[SITE]
    return net, test[:256], X


def test_the_sample_is_one_position_per_sequence_and_pca_counts_are_scikit_learns(shipped):
    net, _, X = shipped
    assert X.shape == (1466, 512) and X.dtype == np.float32 and (X < 0).any()  # before the ReLU
    ours = PCABasis().fit(X)
    reference = PCA().fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.explained_variance_ratio_, reference.explained_variance_ratio_, atol=1e-6)
    assert curves.counts(ours.explained_variance_ratio_) == \
        [int(np.searchsorted(np.cumsum(reference.explained_variance_ratio_), t) + 1) for t in (0.8, 0.99)]
    neurons = NeuronBasis().fit(X)
    variance = np.sort(X.astype(np.float64).var(axis=0, ddof=1))[::-1]
    assert curves.counts(neurons.explained_variance_ratio_) == curves.counts(variance / variance.sum())
    pcs, ns = curves.counts(ours.explained_variance_ratio_), curves.counts(neurons.explained_variance_ratio_)
    assert pcs[0] < ns[0]  # the PCs concentrate this layer's variance, as in the vision networks


def test_removing_every_pc_is_the_layer_replaced_by_its_mean(shipped):
    net, sequences, X = shipped
    basis = PCABasis().fit(X)
    every = text.sweep(net, sequences, SITE, basis, [0, 512])
    mean = torch.as_tensor(X.astype(np.float64).mean(axis=0), dtype=torch.float32)
    handle = net.get_submodule(SITE).register_forward_hook(lambda m, a, out: mean.expand_as(out))  # independent
    try:
        replaced = causal_lm.next_token(net, sequences)
    finally:
        handle.remove()
    base = causal_lm.next_token(net, sequences)
    assert every[0] == {"site": SITE, "order": "top", "n_ablated": 0, **base, "loss_increase": 0.0}
    for row in every[1:]:  # top 512 and bottom 512: both every vector
        assert row["loss"] == pytest.approx(replaced["loss"], rel=1e-4)
        assert abs(row["correct"] - replaced["correct"]) <= 0.001 * row["tokens"]
        assert row["loss_increase"] > 0.01  # the MLP carries part of what the network predicts
    some = text.sweep(net, sequences, SITE, basis, [16])
    top, bottom = some[1], some[2]
    assert (top["order"], bottom["order"]) == ("top", "bottom")
    assert abs(bottom["loss_increase"]) < 0.01 < top["loss_increase"] < every[1]["loss_increase"]  # the least-variance PCs carry ~nothing
    with pytest.raises(ValueError, match="counts holds 513"):
        text.sweep(net, sequences, SITE, basis, [513])
    assert not net.get_submodule(SITE)._forward_hooks


def test_a_gated_mlp_is_ablated_at_the_input_of_down_proj(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                                      intermediate_size=48, vocab_size=100, max_position_embeddings=32)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    net = causal_lm.load_hf(str(tmp_path))
    site = causal_lm.mlp_sites(net)[1]
    sequences = torch.randint(100, (40, 12), generator=torch.Generator().manual_seed(2))
    X = causal_lm.read_positions(net, sequences, np.random.default_rng(0).integers(0, 12, 40), [site])[site]
    neurons = NeuronBasis().fit(X)
    mean = torch.as_tensor(neurons.mean_, dtype=torch.float32)
    handle = net.get_submodule(site).register_forward_pre_hook(lambda m, a: (mean.expand_as(a[0]),))
    try:
        replaced = causal_lm.next_token(net, sequences)
    finally:
        handle.remove()
    with text.removing(net, site, Removal(neurons, np.arange(48))):
        removed = causal_lm.next_token(net, sequences)
    assert removed["loss"] == pytest.approx(replaced["loss"], rel=1e-5)
    plain = causal_lm.next_token(net, sequences)
    assert removed["loss"] != plain["loss"]
    with text.removing(net, site, Removal(neurons, [])):  # nothing removed: the network's own numbers, exactly
        assert causal_lm.next_token(net, sequences) == plain
