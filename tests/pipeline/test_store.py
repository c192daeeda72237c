import errno
import json
import os
import shutil

import numpy as np
import pytest

from helpers.pipeline import keys, store


def _key(seed=0, layers=("conv1",), upstream="sha256:aa"):
    return keys.key({"seed": seed, "layers": list(layers)}, {"sample": upstream}, ("bases.fit",))


def _make(folder, key, value=1.0):
    with store.Build(folder, key, "the test") as b:
        if b.current:
            return b.meta
        np.save(b.partial / "a.npy", np.full((3, 2), value, np.float32))
        return b.commit(["a.npy"])


def test_commit_records_key_files_and_hash_and_renames_atomically(tmp_path):
    folder = tmp_path / "thing"
    meta = _make(folder, _key())
    assert not (tmp_path / "thing.partial").exists()
    assert meta["params"] == {"seed": 0, "layers": ["conv1"]} and meta["inputs"] == {"sample": "sha256:aa"}
    assert list(meta["code"]) == ["helpers/bases/fit.py"]
    record = meta["files"]["a.npy"]
    assert record["shape"] == [3, 2] and record["size"] == (folder / "a.npy").stat().st_size
    assert record["sha256"] == store.file_sha256(folder / "a.npy") and meta["hash"].startswith("sha256:")
    assert store.read_meta(folder, _key())["hash"] == meta["hash"]


def test_a_current_artifact_is_reused_and_another_key_remakes_it(tmp_path):
    folder = tmp_path / "thing"
    first = _make(folder, _key(), 1.0)
    assert _make(folder, _key(), 2.0)["hash"] == first["hash"]  # reused: nothing recomputed
    second = _make(folder, _key(seed=1), 2.0)
    assert second["hash"] != first["hash"] and np.load(folder / "a.npy")[0, 0] == 2.0
    assert not (tmp_path / "thing.old").exists()


def test_stale_artifact_is_refused_naming_each_difference(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key())
    with pytest.raises(store.StaleArtifactError,
                       match=r"is stale: it was made from seed=0 \(now 1\); sample='sha256:aa' \(now "
                             r"'sha256:bb'\)\. Rerun 02_pca"):
        store.read_meta(folder, _key(seed=1, upstream="sha256:bb"), made_by="02_pca")


def test_more_layers_than_asked_serve_but_fewer_do_not(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key(layers=("conv1", "fc1")))
    store.read_meta(folder, _key(layers=("fc1",)))
    with pytest.raises(store.StaleArtifactError, match=r"layers=\['conv1', 'fc1'\] \(now \['conv1', 'fc3'\]\)"):
        store.read_meta(folder, _key(layers=("conv1", "fc3")))


def test_other_code_makes_an_artifact_stale(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key())
    other = keys.key({"seed": 0, "layers": ["conv1"]}, {"sample": "sha256:aa"}, ("ablation.accuracy",))
    with pytest.raises(store.StaleArtifactError, match=r"other code \(helpers/ablation/accuracy.py has changed since\)"):
        store.read_meta(folder, other)


def test_a_sidecar_without_provenance_is_stale(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"params": {"seed": 0}, "files": {}, "hash": "sha256:x"}))
    with pytest.raises(store.StaleArtifactError, match="older version of this package"):
        store.read_meta(folder, _key())


def test_missing_artifact_says_how_to_make_it(tmp_path):
    with pytest.raises(store.MissingArtifactError, match="make it first with 01_sample"):
        store.read_meta(tmp_path / "none", made_by="01_sample")


def test_corrupt_sidecar_is_a_clear_error(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key())
    (folder / "meta.json").write_text('{"params": ')
    with pytest.raises(store.CorruptArtifactError, match=r"meta.json is corrupt .*; delete .*thing and rerun"):
        store.read_meta(folder)


def test_truncated_file_is_corrupt_on_open(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key())
    data = (folder / "a.npy").read_bytes()
    (folder / "a.npy").write_bytes(data[:-4])
    with pytest.raises(store.CorruptArtifactError, match=r"a.npy is corrupt \(.*bytes, the sidecar says .*\); "
                                                         r"delete .*thing and rerun 02_pca"):
        store.read_meta(folder, made_by="02_pca")


def test_same_size_overwrite_is_caught_on_open_and_by_verify(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key(), 1.0)
    np.save(folder / "a.npy", np.full((3, 2), 7.0, np.float32))  # same shape, same size, other bytes
    with pytest.raises(store.CorruptArtifactError, match="modified after it was made"):
        store.read_meta(folder)
    with pytest.raises(store.CorruptArtifactError, match="modified after it was made"):
        store.verify(folder)


def test_same_size_overwrite_with_the_old_mtime_is_caught_by_verify(tmp_path):
    folder = tmp_path / "thing"
    _make(folder, _key(), 1.0)
    st = (folder / "a.npy").stat()
    np.save(folder / "a.npy", np.full((3, 2), 7.0, np.float32))
    os.utime(folder / "a.npy", ns=(st.st_atime_ns, st.st_mtime_ns))  # a sneaky overwrite
    store.read_meta(folder)  # the cheap check cannot see it...
    with pytest.raises(store.CorruptArtifactError, match="modified after it was made"):
        store.verify(folder)  # ...the full one does


def test_a_copy_with_new_times_is_accepted_after_one_hash(tmp_path):
    _make(tmp_path / "thing", _key())
    shutil.copytree(tmp_path / "thing", tmp_path / "copy", copy_function=shutil.copy)  # new mtimes
    store.read_meta(tmp_path / "copy", _key())
    meta = store.read_json(tmp_path / "copy" / "meta.json")
    assert meta["files"]["a.npy"]["mtime_ns"] == (tmp_path / "copy" / "a.npy").stat().st_mtime_ns


def test_corrupt_array_is_a_clear_error(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not an npy file")
    with pytest.raises(store.CorruptArtifactError, match=r"x.npy is corrupt.*delete .* and rerun 01_sample"):
        store.open_array(tmp_path, "x", "01_sample")


def _interrupted(folder, key, summary):
    with pytest.raises(KeyboardInterrupt):
        with store.Build(folder, key, "the test") as b:
            (b.partial / "work.npy").write_bytes(b"x")
            b.save_progress(summary=summary, rows_done=5)
            raise KeyboardInterrupt


def test_an_interrupted_build_resumes_with_the_same_key(tmp_path):
    folder = tmp_path / "thing"
    _interrupted(folder, _key(), "5 of 9 images")
    with store.Build(folder, _key(), "the test") as b:
        assert b.progress["rows_done"] == 5 and (b.partial / "work.npy").exists()


def test_unfinished_work_with_other_settings_is_kept_and_the_message_says_how(tmp_path):
    folder = tmp_path / "thing"
    _interrupted(folder, _key(seed=0), "5 of 9 images")
    with pytest.raises(store.StaleArtifactError,
                       match=r"holds unfinished work \(5 of 9 images\) made with other settings: seed=0 \(now 1\)"
                             r".*resume it.*--restart"):
        with store.Build(folder, _key(seed=1), "the test"):
            pass
    assert (tmp_path / "thing.partial" / "work.npy").exists()  # nothing lost
    with store.Build(folder, _key(seed=1), "the test", restart=True) as b:  # --restart discards it
        assert b.progress.get("rows_done") is None and not (b.partial / "work.npy").exists()


def test_an_abandoned_attempt_without_work_is_set_aside_not_in_the_way(tmp_path, capsys):
    folder = tmp_path / "grids"
    _interrupted(folder, _key(seed=0), None)
    meta = _make(folder, _key(seed=1))
    assert meta["params"]["seed"] == 1
    aside = list((tmp_path / ".set-aside").iterdir())
    assert len(aside) == 1 and (aside[0] / "work.npy").exists()
    assert f"set aside the unfinished {folder}.partial" in capsys.readouterr().err


def test_atomic_leaves_the_old_file_or_the_new_one_never_a_mix(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with store.atomic(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    store.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_a_full_disk_is_a_clear_error_before_writing(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"not enough disk space for .*x.npy: it needs .* MiB .*data_dir"):
        store.new_array(tmp_path / "x.npy", (1000, 64))
    assert not (tmp_path / "x.npy").exists()
