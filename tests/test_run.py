"""The runner: plans like make, refuses bad settings before any kernel, one writer at a time,
names the executed notebook when a kernel dies, and runs this checkout's code."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pandas as pd
import papermill as pm
import pytest

from helpers import run
from helpers.pipeline import kernels, keys, locks, provenance, store
from helpers.pipeline.settings import ROOT, load_profile
from tests.conftest import notebooks_folder, runner_command


def test_parse_parameters_reads_literals_and_strings():
    assert kernels.parse_parameters(["seed=1", "layers=conv1,fc1", "device=None", "n_sample=[1, 2]"]) == {
        "seed": 1, "layers": "conv1,fc1", "device": None, "n_sample": [1, 2]}
    with pytest.raises(ValueError, match="not key=value"):
        kernels.parse_parameters(["seed"])


def test_only_selects_by_number_or_name_and_rejects_unknown():
    names = [nb.stem for nb in run.find_notebooks(["1", "02_pca"])]
    assert names == ["01_sample", "02_pca"]
    with pytest.raises(ValueError, match=r"--only \['99'\]: no such notebook"):
        run.find_notebooks(["99"])


def _notebook(path, body, params='profile = "quick"\ndata_dir = None'):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_failure_names_the_executed_notebook_with_the_traceback(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_ok.ipynb", "x = 1")
    _notebook(folder / "02_bad.ipynb", "raise ValueError('boom')")
    params = {"data_dir": str(tmp_path / "data")}
    with pytest.raises(RuntimeError) as e:
        run.run("smoke", parameters=params, folder=folder)
    executed = tmp_path / "data" / "mini_alexnet" / "notebooks" / "02_bad.ipynb"
    assert str(executed) in str(e.value) and "ValueError: boom" in str(e.value)
    assert "boom" in executed.read_text()
    assert (tmp_path / "data" / "mini_alexnet" / "notebooks" / "01_ok.ipynb").exists()


def test_unknown_parameter_and_profile_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"-p \['sede'\]: not a setting nor a parameter"):
        run.run("smoke", only=["01"], parameters={"sede": 1, "data_dir": str(tmp_path)})
    assert run.main(["--profile", "nope", "--only", "01"]) == 1


@pytest.mark.parametrize("settings, expect", [
    (["n_targets=0"], "setting n_targets=0 is not valid: expected an integer >= 2"),
    (["n_neighbours=-1"], "setting n_neighbours=-1 is not valid: expected an integer >= 1"),
    (["batch_size=abc"], "setting batch_size='abc' is not valid: expected a positive integer"),
    (["seed=1.5"], "setting seed=1.5 is not valid: expected an integer >= 0"),
    (["dataset=imagefolder", "data_root={imagenet}"],
     "model='mini_alexnet' takes 1-channel 28 x 28 images (Fashion-MNIST), but dataset='imagefolder' gives "
     "3-channel images; use one of ['alexnet', 'resnet18', 'resnet50', 'vit_b_16']"),
    (["dataset=imagefolder", "data_root={imagenet}", "model=alexnet"],
     "setting eval_split='test': {imagenet}/test does not exist; {imagenet} has the splits ['train', 'val']. "
     "Use one of them, e.g. -p eval_split=val."),
])
@pytest.mark.parametrize("dry", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_bad_settings_are_refused_before_any_kernel_starts(tmp_path, tiny_imagenet, capsys, settings, expect, dry):
    data = tmp_path / "data"
    args = ["--profile", "smoke", "--only", "04", "-p", f"data_dir={data}", *dry]
    for s in settings:
        args += ["-p", s.format(imagenet=tiny_imagenet)]
    assert run.main(args) == 1
    assert expect.format(imagenet=tiny_imagenet) in capsys.readouterr().err
    assert not (data / "notebooks").exists()  # no kernel started, nothing executed


def test_08_without_concepts_is_refused_unless_left_out(tmp_path, tiny_imagenet, capsys, monkeypatch, alexnet_cache):
    from helpers.images import broden

    monkeypatch.setattr(broden, "DEFAULT_DIR", tmp_path / "no-broden")  # none where the profile looks
    data = tmp_path / "data"
    args = ["--profile", "paper", "-p", f"data_root={tiny_imagenet}", "-p", f"data_dir={data}",
            "-p", "mis_similarity=pixels"]
    ran = []
    monkeypatch.setattr(pm, "execute_notebook", lambda nb, *a, **k: ran.append(os.path.basename(nb)[:-6]))
    for only in (["--only", "08"], []):  # asked for, or the whole run: refused before any kernel
        assert run.main([*args, *only]) == 1
        err = capsys.readouterr().err
        assert "08_compositional needs concepts for dataset='imagenet': fetch Broden with `make broden`" in err
        assert ran == [] and not (data / "notebooks").exists()
    assert "or leave 08_compositional out: --only 01 02 03 04 05 06 07." in err
    assert run.main([*args, "-p", "layers=conv1,fc3", "--dry-run"]) == 1  # the plan without 08, then the refusal
    err = capsys.readouterr().err
    rows = [line.split()[0] for line in err.splitlines() if line.endswith("asked for") or "asked for;" in line]
    assert rows[-1] == "07_user_study_analysis" and "08_compositional" not in rows
    assert "error: a run would be refused:\n08_compositional needs concepts" in err
    assert run.main([*args, "--only", "01", "02", "03", "04", "05", "06", "07"]) == 0
    assert ran == ["01_sample", "02_pca", "03_index", "04_visualize", "05_ablation", "06_user_study",
                   "07_user_study_analysis"]
    from helpers import verify

    assert "compositional" not in [a for a, _, _ in verify.report(load_profile("paper", data_dir=str(data),
                                                                                  data_root=str(tiny_imagenet)))]


def test_the_dry_run_prints_each_steps_cost_and_what_a_run_fetches(tmp_path, tiny_imagenet, capsys, monkeypatch):
    """Weights not cached (a run downloads them first), every step's disk, memory and time, nothing written."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = tmp_path / "data"
    args = ["--profile", "paper", "-p", f"data_root={tiny_imagenet}", "-p", f"data_dir={data}",
            "-p", "mis_similarity=pixels", "-p", "layers=conv1,fc3", "-p", "batch_size=4", "-p", "device=cpu", "-p", "num_workers=2",
            "--only", "01", "02", "03", "04", "05", "06", "07"]
    assert run.main([*args, "--dry-run"]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith(f"plan (paper, {data / 'alexnet'}): 01_sample, 02_pca")
    assert re.search(r"dry run: nothing is written\. Times are projections from a [\d.]+ s calibration on cpu",
                     lines[1])
    for name in ("01_sample", "02_pca", "03_index", "04_visualize", "05_ablation", "06_user_study"):
        row = next(line for line in lines if line.startswith(name))
        assert re.match(rf"{name} +[\d.,]+ [KMG]?i?B +[\d.,]+ [KMG]?i?B +[\d.,]+ [KMG]?i?B +\d+ (s|min|h)  asked for",
                        row), row
    assert "a run fetches first: alexnet's weights IMAGENET1K_V1: not in torch's cache" in err
    assert "(222.3 MiB download)" in err and "calibration: forward" in err
    assert lines[-1] == "a run would start: nothing above stops it."
    assert not data.exists() and not (tmp_path / "torch").exists()  # nothing written, nothing fetched
    from helpers.study import mis

    found = mis.importlib.util.find_spec
    monkeypatch.setattr(mis.importlib.util, "find_spec", lambda name: None if name == "dreamsim" else found(name))
    assert run.main([*args, "-p", "mis_similarity=dreamsim", "--dry-run"]) == 1  # refused as a run would be
    err = capsys.readouterr().err
    assert "missing: DreamSim: the dreamsim package is not installed" in err
    assert "error: a run would be refused:\nDreamSim: the dreamsim package is not installed" in err


def test_a_run_that_would_not_fit_the_disk_is_refused_with_the_numbers(tmp_path, capsys, monkeypatch):
    from helpers import estimate

    data = tmp_path / "data"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(estimate.shutil, "disk_usage", lambda path: usage._replace(free=300 * 1024))
    args = ["--profile", "smoke", "-p", f"data_dir={data}", "--only", "01"]
    for dry in ([], ["--dry-run"]):
        assert run.main([*args, *dry]) == 1
        err = capsys.readouterr().err
        assert re.search(r"the run would write about [\d.]+ [KM]iB \(01_sample [\d.]+ [KM]iB\) into .*data/mini_alexnet, but "
                         r"its disk has 300\.0 KiB free \(.*\): free space, set data_dir", err), err
        assert not (data / "mini_alexnet" / "notebooks").exists()


def test_the_runner_is_quiet_one_bar_then_where_the_outputs_are(copy, capfd):
    assert run.main(["--profile", "smoke", "--only", "07", *(a for k, v in copy.params.items()
                                                           for a in ("-p", f"{k}={v}"))]) == 0
    out, err = capfd.readouterr()
    assert "WARNING" not in err and "Kernel is running" not in err, err
    assert f"done: figures and tables in {copy.figures}, artifacts in {copy.data}" in err
    assert out == ""


def test_an_upstream_of_other_settings_is_never_read_and_the_runner_makes_what_is_missing(copy):
    """Before: bases fitted to the old 320-image sample were used by 03-05 after 01 made a 200-image one."""
    said = []
    run.run("smoke", only=["01"], parameters={**copy.params, "n_sample": 200}, say=said.append)
    p, old = load_profile("smoke", **copy.params, n_sample=200), load_profile("smoke", **copy.params)
    assert p.artifact("sample") != old.artifact("sample")  # side by side
    with pytest.raises(store.MissingArtifactError, match=r"no artifact at .*bases.*; make it first with 02_pca"):
        provenance.require(p, "bases")  # the bases of the 320-image sample are not these settings'
    said.clear()
    run.run("smoke", only=["03"], parameters={**copy.params, "n_sample": 200}, say=said.append)
    assert said[0].startswith("plan (smoke") and "02_pca, 03_index" in said[0]
    assert "02_pca runs first: bases is missing: not made yet for these settings" in said[1]
    for artifact in ("model", "sample", "bases", "index"):
        assert provenance.status(p, artifact)[0] == "current", artifact
        assert provenance.status(old, artifact)[0] == "current", artifact  # the first settings' stay
    assert store.read_meta(p.artifact("bases"))["inputs"]["sample"] == store.read_meta(p.artifact("sample"))["hash"]
    assert provenance.status(p, "grids")[0] == "missing"  # not asked for: left for a later run to make


def test_a_notebook_run_alone_makes_what_its_settings_read(copy):
    """Before: 04 opened in Lab after make demo failed on its first cell ("bases is stale ... rerun 02")."""
    p = load_profile("smoke", **{**copy.params, "bases": "pca,neuron"}, n_targets=6)
    pm.execute_notebook(str(notebooks_folder() / "04_visualize.ipynb"), str(copy.data / "04.ipynb"),
                        parameters={"profile": "smoke", "data_dir": copy.params["data_dir"], "bases": "pca,neuron",
                                    "n_targets": 6, "figures_dir": str(copy.figures.parent)},
                        cwd=str(notebooks_folder()), progress_bar=False)
    executed = (copy.data / "04.ipynb").read_text()
    assert "bases is missing for these settings" in executed and "index is missing for these settings" in executed
    for artifact in ("bases", "index", "grids"):
        assert provenance.status(p, artifact)[0] == "current", artifact
    every = load_profile("smoke", **copy.params)
    assert all(provenance.status(every, a)[0] == "current" for a in ("bases", "index", "grids"))


def test_other_eval_images_recompute_the_ablation(copy):
    """Before: -p n_eval=100 returned the old CSV (the sidecar recorded how many images, not which)."""
    before = store.read_meta(load_profile("smoke", **copy.params).artifact("ablation"))
    said = []
    run.run("smoke", only=["05"], parameters={**copy.params, "n_eval": 100}, say=said.append)
    assert said[0] == f"plan (smoke, {copy.data}): 05_ablation"  # nothing else is stale
    assert len(said) == 2 and said[1].startswith("done: figures and tables in")
    p = load_profile("smoke", **copy.params, n_eval=100)
    after = store.read_meta(p.artifact("ablation"))
    assert after["inputs"]["images"]["indices"] != before["inputs"]["images"]["indices"]
    assert provenance.status(p, "ablation")[0] == "current"
    assert provenance.status(load_profile("smoke", **copy.params), "ablation")[0] == "current"  # side by side


def test_two_runs_of_one_step_never_interleave(copy, tmp_path):
    """Before: two concurrent 05 runs both exited 0 and ablation.csv held duplicated layer blocks."""
    folder = load_profile("smoke", **copy.params).artifact("ablation")
    expected = pd.read_csv(folder / "ablation.csv")
    shutil.rmtree(folder)
    cmd = [*runner_command(), "--profile", "smoke", "--only", "05",
           "-p", f"data_dir={copy.data.parent}", "-p", f"figures_dir={copy.figures.parent}",
           "-p", f"bases={copy.params['bases']}"]
    logs = [tmp_path / f"run{i}.err" for i in range(3)]

    def start(i, *extra):
        return subprocess.Popen(cmd + list(extra), cwd=str(ROOT), stdout=subprocess.DEVNULL,
                                stderr=logs[i].open("w"))

    holder = locks.Lock(copy.data / ".locks" / "step-05.lock", "step 05", wait=False).acquire()  # a 05 running
    try:
        runs = [start(0), start(1)]
        refused = start(2, "--no-wait")
        assert refused.wait(timeout=120) == 1
        assert f"step 05_ablation of {copy.data} is being written by pid {os.getpid()}" in logs[2].read_text()
        assert "rerun without --no-wait" in logs[2].read_text()
        deadline = time.monotonic() + 120
        while not all("waiting for step 05_ablation" in log.read_text() for log in logs[:2]):
            assert all(r.poll() is None for r in runs) and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        holder.release()
    for r, log in zip(runs, logs):
        assert r.wait(timeout=300) == 0, log.read_text()[-3000:]
    got = pd.read_csv(folder / "ablation.csv")
    pd.testing.assert_frame_equal(got, expected)  # one sweep's rows, once: no duplicated blocks
    assert not got.duplicated(["layer", "basis", "order", "n_ablated"]).any()


def test_a_failed_attempt_does_not_block_a_run_with_other_settings(copy):
    """Before: a failed 04's grids.partial blocked the next plain run until deleted by hand."""
    other = keys.key({"n_targets": 3}, {}, ())
    folder = load_profile("smoke", **copy.params).artifact("grids")
    with pytest.raises(KeyboardInterrupt):
        with store.Build(folder, other, "04") as b:
            (b.partial / "conv1").mkdir()
            raise KeyboardInterrupt
    shutil.rmtree(folder)
    run.run("smoke", only=["04"], parameters=copy.params)
    assert store.read_meta(folder)["params"]["n_targets"] == 10
    aside = list((folder.parent / ".set-aside").iterdir())
    assert [a.name.split("-")[0] for a in aside] == [f"{folder.name}.partial"] and (aside[0] / "conv1").is_dir()
    assert "set aside the unfinished" in (copy.data / "notebooks" / "04_visualize.ipynb").read_text()


def test_a_dying_kernel_is_reported_with_the_notebook_and_the_likely_cause(tmp_path, monkeypatch):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_dies.ipynb", "print('started', flush=True)\nimport os, signal\n"
                                        "os.kill(os.getpid(), signal.SIGKILL)")
    params = {"data_dir": str(tmp_path / "data")}
    with pytest.raises(RuntimeError) as e:
        run.run("smoke", parameters=params, folder=folder)
    executed = tmp_path / "data" / "mini_alexnet" / "notebooks" / "01_dies.ipynb"
    assert "notebook 01_dies: its kernel died" in str(e.value) and str(executed) in str(e.value)
    assert "started" in executed.read_text()
    assert "GiB free on its disk" in str(e.value)  # no cause visible here: it says what it checked
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(kernels.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    with pytest.raises(RuntimeError, match=r"likely cause: the disk holding .*data/mini_alexnet is full \(10 MiB free\)"):
        run.run("smoke", parameters=params, folder=folder)


def test_kernels_import_the_runners_checkout(tmp_path):
    """Before: from a second checkout whose .venv is an editable install of another tree, the kernels
    imported the other tree's helpers (and wrote into its data/)."""
    checkout = tmp_path / "second"
    shutil.copytree(ROOT / "helpers", checkout / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "notebooks").mkdir()
    record = tmp_path / "imported.json"
    _notebook(checkout / "notebooks" / "01_which.ipynb",
              "import json, helpers\nfrom helpers import pipeline\n"
              f"json.dump([helpers.__file__, str(pipeline.ROOT)], open({str(record)!r}, 'w'))")
    import helpers

    assert helpers.__file__.startswith(str(ROOT))  # this interpreter's helpers is the other tree
    done = subprocess.run([sys.executable, "-m", "helpers.run", "--profile", "smoke", "--only", "01",
                           "-p", f"data_dir={tmp_path / 'data'}"], cwd=str(checkout), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported, root = json.loads(record.read_text())
    assert imported == str(checkout / "helpers" / "__init__.py") and root == str(checkout)
    # a kernel that would import another tree's helpers refuses, naming both
    env = {**os.environ, "HELPERS_ROOT": str(checkout)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-m", "papermill", str(checkout / "notebooks" / "01_which.ipynb"),
                           str(tmp_path / "out.ipynb"), "--cwd", str(checkout / "notebooks")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert done.returncode != 0
    assert f"the runner that started it runs the checkout {checkout}" in (tmp_path / "out.ipynb").read_text()
