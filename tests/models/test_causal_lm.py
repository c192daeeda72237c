"""Causal LMs: Hugging Face's GPT-2, GPT-NeoX and Llama of random weights, saved to folders and loaded through
``from_pretrained`` (offline), and mini_gpt: each block's neurons where the family says, against the MLP's
arithmetic written out."""
import pytest
import torch
import transformers
from torch.nn import functional as F

from helpers.models import causal_lm, gpt
from helpers.models.running import state_hash

CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32,
                                            bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                                   intermediate_size=64, vocab_size=100, max_position_embeddings=32),
    "llama": lambda: transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                              num_key_value_heads=2, intermediate_size=48, vocab_size=100,
                                              max_position_embeddings=32),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder per family, written by save_pretrained from a seeded random model."""
    folders = {}
    for kind, config in CONFIGS.items():
        torch.manual_seed(1234)  # not a seed the controls below use
        folders[kind] = tmp_path_factory.mktemp(kind)
        transformers.AutoModelForCausalLM.from_config(config()).save_pretrained(folders[kind])
    return folders


def expected_neurons(kind, mlp, x):
    """The MLP's hidden units from its input ``x``, written out: x W + b before the nonlinearity, or, for a
    gated MLP, silu(x W_gate) * (x W_up)."""
    if kind == "gpt2":  # Conv1D: weight (in, out)
        return x @ mlp.c_fc.weight + mlp.c_fc.bias
    if kind == "gpt_neox":
        return x @ mlp.dense_h_to_4h.weight.T + mlp.dense_h_to_4h.bias
    gate = x @ mlp.gate_proj.weight.T
    return gate * torch.sigmoid(gate) * (x @ mlp.up_proj.weight.T)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_each_blocks_neurons_are_its_mlps_hidden_units(kind, saved):
    model = causal_lm.load_hf(str(saved[kind]))
    sites = causal_lm.mlp_sites(model)
    assert len(sites) == 2 and causal_lm.family(model) == kind
    tokens = torch.randint(100, (3, 10), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([0, 4, 9])
    mlps = {s: model.get_submodule(s.rsplit(".", 1)[0]) for s in sites}
    seen = {}
    handles = [m.register_forward_pre_hook(lambda m, a, s=s: seen.update({s: a[0]})) for s, m in mlps.items()]
    try:
        with torch.no_grad(), causal_lm.reading(model, sites) as full:
            out = causal_lm.logits(model, tokens)
        with torch.no_grad(), causal_lm.reading(model, sites, positions) as at:
            causal_lm.logits(model, tokens)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (3, 10, 100)
    for site in sites:
        with torch.no_grad():
            want = expected_neurons(kind, mlps[site], seen[site])
        torch.testing.assert_close(full[site], want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(at[site], full[site][torch.arange(3), positions])
        assert (want < 0).any()  # before the nonlinearity (a GELU's or ReLU's output is never this negative)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_the_untrained_control_is_seeded_and_not_the_trained_network(saved):
    trained = causal_lm.load_hf(str(saved["gpt2"]))
    a = causal_lm.load_hf(str(saved["gpt2"]), trained=False, seed=0)
    b = causal_lm.load_hf(str(saved["gpt2"]), trained=False, seed=0)
    c = causal_lm.load_hf(str(saved["gpt2"]), trained=False, seed=1)
    assert state_hash(a) == state_hash(b) != state_hash(c)
    assert state_hash(a) != state_hash(trained) and a.config.to_dict() == trained.config.to_dict()


def test_mini_gpt_reads_before_its_relu_and_hooks_go_on_error():
    torch.manual_seed(0)
    net = gpt.MiniGPT(vocab_size=50, length=8, d_model=16, n_layers=3, n_heads=2, d_mlp=24).eval()
    assert causal_lm.mlp_sites(net) == ["blocks.0.mlp.fc", "blocks.1.mlp.fc", "blocks.2.mlp.fc"]
    tokens = torch.randint(50, (2, 8))
    with torch.no_grad(), causal_lm.reading(net, ["blocks.1.mlp.fc", "blocks.1"]) as found:
        causal_lm.logits(net, tokens)
    residual = net.embed(tokens) + net.position(torch.arange(8))
    with torch.no_grad():
        residual = net.blocks[0](residual)
        mid = residual + net.blocks[1].attn(net.blocks[1].ln1(residual))
        torch.testing.assert_close(found["blocks.1.mlp.fc"], F.linear(net.blocks[1].ln2(mid), net.blocks[1].mlp.fc.weight,
                                                                      net.blocks[1].mlp.fc.bias))
        torch.testing.assert_close(found["blocks.1"], net.blocks[1](residual))  # the residual stream
    with pytest.raises(RuntimeError, match="inside"):
        with causal_lm.reading(net, causal_lm.mlp_sites(net)):
            raise RuntimeError("inside")
    assert not any(m._forward_hooks for m in net.modules())


def test_an_unknown_family_or_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"no MLP site is known for a model of type None \(Linear\).*named_modules"):
        causal_lm.mlp_sites(torch.nn.Linear(2, 2))
    with pytest.raises(OSError, match="could not be loaded.*save_pretrained.*HF_HUB_OFFLINE"):
        causal_lm.load_hf(str(tmp_path / "nothing-here"))
