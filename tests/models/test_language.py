"""Language models as names and profiles: the registry's ``mini_gpt`` and ``hf:`` names, the text a language model
chooses in a profile made for images, the refusals of a model given the other kind of data, and a gated MLP's
neurons read at the input of down_proj through the steps' own hook sites."""
import pytest
import torch
import transformers

from helpers.models import causal_lm, families, language, loading, registry
from helpers.models.sites import sites
from helpers.pipeline.rules import is_text_dataset
from helpers.pipeline.settings import load_profile
from helpers.sampling import capture, forward_until


def test_language_model_names_parse_with_their_untrained_controls():
    assert registry.spec("mini_gpt").text and registry.spec("mini_gpt").source == "standin"
    assert (registry.spec("mini_gpt:untrained").source, registry.spec("mini_gpt:untrained").target) == \
        ("untrained", "mini_gpt")
    hub = registry.spec("hf:EleutherAI/pythia-70m")
    assert (hub.source, hub.target, hub.weights, hub.text) == ("hf", "EleutherAI/pythia-70m", None, True)
    control = registry.spec("hf:gpt2:untrained")
    assert (control.target, control.weights) == ("gpt2", "untrained")
    assert not registry.spec("mini_alexnet").text
    with pytest.raises(ValueError, match="names no model"):
        registry.spec("hf:")


def test_a_language_model_chooses_its_text_in_a_profile_made_for_images():
    p = load_profile("quick", model="mini_gpt")
    assert (p.dataset, p.eval_split, p.ablation_eval, p.retrain) == ("fortunes", "test", 256, False)
    assert p.layers == tuple(f"blocks.{i}.mlp.fc" for i in range(4))
    assert load_profile("smoke", model="mini_gpt").retrain is False  # smoke retrains images' stand-ins only
    given = load_profile("quick", model="mini_gpt", dataset="textfolder", data_root="/x", ablation_eval=7)
    assert (given.dataset, given.data_root, given.ablation_eval) == ("textfolder", "/x", 7)
    assert load_profile("quick", model="mini_alexnet").dataset == "fashion_mnist"  # image models: unchanged
    assert is_text_dataset("hf:wikitext:wikitext-103-raw-v1") and not is_text_dataset("imagenet")
    with pytest.raises(ValueError, match="setting dataset='hf:a:b:c' is not valid"):
        load_profile("quick", dataset="hf:a:b:c")


@pytest.mark.parametrize("settings, expect", [
    ({"model": "mini_alexnet", "dataset": "fortunes"}, "gives text; use dataset='fashion_mnist', 'imagenet'"),
    ({"model": "mini_gpt", "dataset": "fashion_mnist"}, "gives images; use dataset='fortunes', 'textfolder'"),
    ({"model": "mini_gpt", "retrain": True}, "python -m helpers.models.lm_training"),
])
def test_a_model_given_the_other_kind_of_data_is_refused(settings, expect):
    with pytest.raises(ValueError, match=expect.replace("(", r"\(")):
        loading.check(load_profile("quick", **settings))


def test_mini_gpt_reads_its_shipped_tokenizer_and_64_positions():
    tokenizer, end, length = language.text_input("mini_gpt")
    assert (end, length, tokenizer.get_vocab_size()) == ("<|endoftext|>", 64, 2048)
    assert language.text_input("mini_gpt:untrained")[0] is tokenizer
    with pytest.raises(ValueError, match="not text"):
        language.text_input("mini_alexnet")


def test_the_untrained_mini_gpt_is_seeded_and_not_the_shipped_one():
    a, b = (load_profile("quick", model="mini_gpt:untrained", seed=s) for s in (0, 1))
    shipped, _ = loading.load_model(load_profile("quick", model="mini_gpt"), device="cpu")
    one, info = loading.load_model(a, device="cpu")
    again, _ = loading.load_model(a, device="cpu")
    other, _ = loading.load_model(b, device="cpu")
    assert info["family"] == "causal LM"
    w = "blocks.0.mlp.fc.weight"
    assert torch.equal(one.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(one.state_dict()[w], other.state_dict()[w])
    assert not torch.equal(one.state_dict()[w], shipped.state_dict()[w])


def test_a_gated_mlps_neurons_are_read_at_the_input_of_down_proj_by_the_steps_hooks(tmp_path):
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                                      intermediate_size=48, vocab_size=100, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    net = causal_lm.load_hf(str(tmp_path))
    assert families.family_of(net).name == "causal LM"
    path = causal_lm.mlp_sites(net)[1]
    found = sites(net, [path], torch.zeros(12, dtype=torch.long))
    assert found[path].input and found[path].shape == (48, 12, 1)
    batch = torch.randint(100, (5, 12), generator=torch.Generator().manual_seed(1))
    with capture(net, found) as out:
        forward_until(net, batch)
    mlp = net.model.layers[1].mlp
    with causal_lm.reading(net, [f"model.layers.1.post_attention_layernorm"]) as normed:
        net(batch)
    expected = mlp.act_fn(mlp.gate_proj(normed["model.layers.1.post_attention_layernorm"])) * \
        mlp.up_proj(normed["model.layers.1.post_attention_layernorm"])
    torch.testing.assert_close(out[path][..., 0].transpose(1, 2), expected, rtol=1e-5, atol=1e-6)
