import pytest

from helpers.pipeline.settings import SETTINGS, load_profile


def test_overrides_replace_fields_and_none_keeps_profile_value():
    p = load_profile("quick", seed=3, batch_size=None, layers="conv1, fc1")
    assert p.seed == 3
    assert p.batch_size == load_profile("quick").batch_size
    assert p.layers == ("conv1", "fc1")


def test_paths_follow_profile_name_unless_overridden(tmp_path):
    import helpers.steps  # noqa: F401  declares the steps, whose keys name the folders

    p = load_profile("smoke", retrain=False)  # the shipped weights: no model artifact to make first
    assert p.artifact("sample").parts[-4:-1] == ("smoke", "mini_alexnet", "sample")
    assert p.figure("fig05").parts[-3:] == ("smoke", "mini_alexnet", "fig05")
    q = load_profile("smoke", retrain=False, data_dir=str(tmp_path / "d"), figures_dir=str(tmp_path / "f"))
    assert q.artifact("sample").parent == tmp_path / "d" / "mini_alexnet" / "sample"
    assert q.artifact("sample").name == p.artifact("sample").name  # named by the settings, not the place
    assert load_profile("smoke", retrain=False, seed=1).artifact("sample").name != p.artifact("sample").name
    assert load_profile("smoke", retrain=False, layers="conv1").artifact("sample") == p.artifact("sample")  # more layers serve
    assert q.figure("fig05") == tmp_path / "f" / "mini_alexnet" / "fig05"


def test_models_never_share_a_folder():
    names = ["mini_alexnet", "mini_resnet", "resnet18", "torchvision:resnet18:IMAGENET1K_V1",
             "torchvision:resnet18:none", "my_pkg.nets:make_net"]
    folders = {load_profile("smoke", model=m, layers="fc").data_path for m in names}
    assert len(folders) == len(names)
    assert load_profile("smoke", model="my_pkg.nets:make_net", layers="fc").data_path.name == "my_pkg.nets-make_net"


def test_unknown_profile_names_valid_ones():
    with pytest.raises(ValueError, match=r"profile='nope' is unknown.*\['paper', 'quick', 'smoke'\]"):
        load_profile("nope")


def test_unknown_setting_names_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile setting\(s\) \['sede'\].*'seed'"):
        load_profile("quick", sede=1)


def test_settings_cover_every_field_but_name():
    assert "name" not in SETTINGS and {"seed", "layers", "data_root"} <= set(SETTINGS)


@pytest.mark.parametrize("setting, value, expect", [
    ("n_targets", 0, r"setting n_targets=0 is not valid: expected an integer >= 2"),
    ("n_neighbours", -1, r"setting n_neighbours=-1 is not valid: expected an integer >= 1"),
    ("batch_size", "abc", r"setting batch_size='abc' is not valid: expected a positive integer"),
    ("seed", 1.5, r"setting seed=1.5 is not valid: expected an integer >= 0"),
    ("ablation_dense", 1, r"setting ablation_dense=1 is not valid: expected True or False"),
    ("index_kind", "hnsw", r"setting index_kind='hnsw' is not valid: expected 'flat' \(exact\) or 'ivf'"),
    ("device", "gpu", r"setting device='gpu' is not valid"),
    ("layers", "conv1,conv1", r"setting layers=\('conv1', 'conv1'\) is not valid: expected distinct layer names"),
    ("n_sample", 0, r"setting n_sample=0 is not valid: expected a positive integer, or None for all"),
    ("eval_split", "val", r"setting eval_split='val' is not a Fashion-MNIST split: it has \('train', 'test'\)"),
])
def test_every_setting_is_checked_with_its_valid_range(setting, value, expect):
    with pytest.raises(ValueError, match=expect):
        load_profile("smoke", **{setting: value})


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_a_refusal_names_the_profile_in_use_and_its_default(profile):
    default = load_profile(profile).n_targets
    with pytest.raises(ValueError) as e:
        load_profile(profile, n_targets=0)
    assert str(e.value).endswith(f"(the {profile} profile's default is n_targets={default}).")


def test_one_band_may_be_given_as_a_number():
    assert load_profile("smoke", mis_bands=0.2).mis_bands == (0.2,)
    assert load_profile("smoke", mis_bands="0.1,0.2").mis_bands == (0.1, 0.2)
    with pytest.raises(ValueError, match="setting mis_bands=True is not valid"):
        load_profile("smoke", mis_bands=True)


def test_combinations_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match=r"nprobe=32 is not valid with nlist=16.*nprobe <= 16"):
        load_profile("smoke", index_kind="ivf", nprobe=32)
    load_profile("smoke", nprobe=32)  # a flat index has no lists to probe


def test_paths_may_be_given_as_path_objects(tmp_path):
    assert load_profile("smoke", data_dir=tmp_path).data_dir == str(tmp_path)


def test_every_setting_has_a_rule():
    from helpers.pipeline.rules import RULES

    assert set(RULES) == set(SETTINGS)
