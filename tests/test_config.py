import pytest

from helpers.config import SETTINGS, load_profile


def test_overrides_replace_fields_and_none_keeps_profile_value():
    p = load_profile("quick", seed=3, batch_size=None, layers="conv1, fc1")
    assert p.seed == 3
    assert p.batch_size == load_profile("quick").batch_size
    assert p.layers == ("conv1", "fc1")


def test_paths_follow_profile_name_unless_overridden(tmp_path):
    p = load_profile("smoke")
    assert p.artifact("sample").parts[-2:] == ("smoke", "sample")
    q = load_profile("smoke", data_dir=str(tmp_path / "d"), figures_dir=str(tmp_path / "f"))
    assert q.artifact("sample") == tmp_path / "d" / "sample"
    assert q.figure("fig05") == tmp_path / "f" / "fig05"


def test_unknown_profile_names_valid_ones():
    with pytest.raises(ValueError, match=r"profile='nope' is unknown.*\['paper', 'quick', 'smoke'\]"):
        load_profile("nope")


def test_unknown_setting_names_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile setting\(s\) \['sede'\].*'seed'"):
        load_profile("quick", sede=1)


def test_settings_cover_every_field_but_name():
    assert "name" not in SETTINGS and {"seed", "layers", "data_root"} <= set(SETTINGS)
