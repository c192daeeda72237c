import json

import numpy as np
import pytest

from helpers import store


def _make(folder, params, value=1.0):
    partial, progress = store.begin(folder, params)
    np.save(partial / "a.npy", np.full((3, 2), value, np.float32))
    return store.commit(partial, folder, params, "test", "thing", ["a.npy"])


def test_commit_writes_sidecar_and_renames_atomically(tmp_path):
    folder = tmp_path / "thing"
    meta = _make(folder, {"seed": 0})
    assert not (tmp_path / "thing.partial").exists()
    assert meta["files"] == {"a.npy": [3, 2]} and meta["hash"].startswith("sha256:")
    assert store.read_meta(folder, {"seed": 0})["hash"] == meta["hash"]


def test_hash_changes_with_content(tmp_path):
    a = _make(tmp_path / "a", {"seed": 0}, 1.0)
    b = _make(tmp_path / "b", {"seed": 0}, 2.0)
    assert a["hash"] != b["hash"]


def test_commit_replaces_an_old_artifact(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, {"seed": 0}, 1.0)
    _make(folder, {"seed": 1}, 2.0)
    assert np.load(folder / "a.npy")[0, 0] == 2.0
    assert not (tmp_path / "thing.old").exists()


def test_stale_artifact_is_refused_with_the_differences(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, {"seed": 0, "layers": ["conv1"]})
    with pytest.raises(store.StaleArtifactError, match=r"seed=0 \(asked: 1\).*Delete"):
        store.read_meta(folder, {"seed": 1, "layers": ["conv1"]})


def test_missing_artifact_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make it first with 01_sample"):
        store.read_meta(tmp_path / "none", made_by="01_sample")


def test_corrupt_sidecar_is_a_clear_error(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, {"seed": 0})
    (folder / "meta.json").write_text('{"params": ')
    with pytest.raises(ValueError, match="corrupt.*delete"):
        store.read_meta(folder)


def test_corrupt_array_is_a_clear_error(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match="x.npy is corrupt"):
        store.open_array(tmp_path, "x")


def test_begin_resumes_same_params_and_refuses_other_params(tmp_path):
    folder = tmp_path / "thing"
    partial, progress = store.begin(folder, {"seed": 0})
    store.save_progress(partial, {"seed": 0}, rows_done=5)
    (partial / "keep.npy").write_bytes(b"x")
    partial2, progress2 = store.begin(folder, {"seed": 0})
    assert partial2 == partial and progress2["rows_done"] == 5
    with pytest.raises(store.StaleArtifactError, match="unfinished run"):
        store.begin(folder, {"seed": 1})
    assert (partial / "keep.npy").exists()  # nothing lost


def test_write_json_leaves_no_temporary(tmp_path):
    store.write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
