"""Untrained controls of the built-ins (``<built-in>:untrained``): seeded random weights, never trained or loaded."""
import pytest
import torch

from helpers import models
from helpers.models import shipped
from helpers.models.registry import untrained
from helpers.pipeline.settings import load_profile, slug


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["mini_alexnet", "mini_resnet", "mini_vit"])
def test_same_seed_gives_the_same_weights_another_seed_other_ones(model):
    name = f"{model}:untrained"
    state = untrained(name, seed=0).state_dict()
    assert _same(state, untrained(name, seed=0).state_dict())
    assert not _same(state, untrained(name, seed=1).state_dict())
    assert type(untrained(name)) is type(models.architecture(model))


@pytest.mark.parametrize("model", ["mini_alexnet", "mini_resnet", "mini_vit"])
def test_untrained_weights_are_not_the_shipped_ones(model):
    state = untrained(f"{model}:untrained").state_dict()
    weights = shipped.load_state(model)
    assert state.keys() == weights.keys()
    assert not any(torch.equal(state[k], weights[k]) for k in state if state[k].is_floating_point()
                   and state[k].numel() > 1 and not (state[k] == state[k].flatten()[0]).all())


def test_seeding_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    untrained("mini_alexnet:untrained", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_spec_parses_the_control_before_the_callable_form():
    s = models.spec("mini_alexnet:untrained")
    assert (s.source, s.target, s.weights) == ("untrained", "mini_alexnet", None)
    assert (s.channels, s.input) == (models.spec("mini_alexnet").channels, models.spec("mini_alexnet").input)
    assert models.spec("alexnet:untrained").channels == 3
    assert not models.is_trained_here("mini_alexnet:untrained")
    assert slug("mini_alexnet:untrained") == "mini_alexnet-untrained"


def test_an_untrained_control_of_no_built_in_is_refused_naming_the_built_ins():
    with pytest.raises(ValueError, match=r"model='foo:untrained': untrained controls exist for the built-ins "
                                         r"only, \['mini_alexnet:untrained', .*'vit_b_16:untrained'\]"):
        models.spec("foo:untrained")
    with pytest.raises(ValueError, match="untrained controls exist for the built-ins only"):
        load_profile("smoke", model="foo:untrained")


def test_layers_and_architecture_are_the_built_ins():
    assert models.default_layers("mini_resnet:untrained") == models.default_layers("mini_resnet")
    assert models.architecture("mini_vit:untrained") is models.architecture("mini_vit")


def test_smoke_profile_does_not_train_the_control_and_its_id_is_its_own(tmp_path):
    p = load_profile("smoke", model="mini_alexnet:untrained", data_dir=str(tmp_path))
    assert p.retrain  # the smoke profile trains its stand-in; the control is not trained all the same
    model, info = models.load_model(p, device="cpu")
    assert not p.artifact("model").exists()
    assert not any(tmp_path.rglob("model.pt"))
    assert p.artifact("model").parent.parent.name == "mini_alexnet-untrained"
    assert info["id"] == f"mini_alexnet:untrained@{models.state_hash(model)}" == models.model_id(p)
    assert info["weights"] == "untrained (seed 0)" and info["family"] == "AlexNet"
    assert info["id"] != shipped.model_id("mini_alexnet")
    assert models.state_hash(model) != shipped.record("mini_alexnet")["weights_sha256"]
    other = load_profile("smoke", model="mini_alexnet:untrained", data_dir=str(tmp_path), seed=1)
    assert models.model_id(other) != models.model_id(p)
    _, info1 = models.load_model(other, device="cpu")
    assert info1["weights"] == "untrained (seed 1)" and info1["id"] == models.model_id(other)


def test_alexnet_control_builds_torchvision_alexnet_without_any_weights_file(tmp_path, monkeypatch):
    import torchvision
    from torchvision.models import AlexNet_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise AssertionError("an untrained control downloads nothing")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    model = untrained("alexnet:untrained", seed=0)
    assert isinstance(model, torchvision.models.AlexNet)
    torch.manual_seed(0)
    assert _same(model.state_dict(), torchvision.models.alexnet(weights=None).state_dict())
    assert models.weights_id("alexnet:untrained", 0) == f"alexnet:untrained@{models.state_hash(model)}"
    assert list(tmp_path.iterdir()) == []
    pre, expected = models.preprocessing("alexnet:untrained"), AlexNet_Weights.IMAGENET1K_V1.transforms()
    assert (pre.resize_size, pre.crop_size, pre.mean, pre.std) == (expected.resize_size, expected.crop_size,
                                                                   expected.mean, expected.std)
    assert models.default_layers("alexnet:untrained") == models.default_layers("alexnet")
    assert models.preprocessing("mini_alexnet:untrained").crop_size == models.preprocessing("mini_alexnet").crop_size


def test_no_weight_matrix_of_a_control_is_left_at_zero():
    """A ViT's head starts at zero in its constructor: the control draws it, so the layer is not constant."""
    from helpers.models.registry import builder

    torch.manual_seed(0)
    plain = builder("mini_vit")()
    zero = [n for n, w in plain.named_parameters() if n.endswith("weight") and w.ndim > 1 and not w.any()]
    assert zero  # the constructor does leave one at zero
    model = untrained("mini_vit:untrained", seed=0)
    params = dict(model.named_parameters())
    for n in zero:
        assert params[n].any() and 0.01 < float(params[n].std()) < 0.03, n
    torch.testing.assert_close(params[zero[0]],
                               dict(untrained("mini_vit:untrained", seed=0).named_parameters())[zero[0]], rtol=0, atol=0)
