"""The notebooks: committed clean, paired with their .py, and run headless by papermill."""
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest

from helpers.config import ROOT, SETTINGS, load_profile

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_paired_and_has_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = pm.inspect_notebook(str(path))
    assert {"profile", *SETTINGS} <= set(declared), "every profile setting is a parameter"
    assert all(p["inferred_type_name"] in ("str", "None", "int", "float", "bool") for p in declared.values())
    paired = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], \
        f"run `jupytext --sync {path}`"


def _papermill(nb, out, **params):
    """The papermill command line, as a user runs one notebook alone."""
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent)]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{nb.name} failed; see {out}\n{done.stderr[-3000:]}"


def test_01_and_02_run_alone_with_papermill_on_smoke(tmp_path):
    dirs = {"data_dir": tmp_path / "data", "figures_dir": tmp_path / "figures"}
    for nb in NOTEBOOKS[:2]:
        _papermill(nb, tmp_path / nb.name, profile="smoke", **dirs)
    p = load_profile("smoke", data_dir=str(dirs["data_dir"]), figures_dir=str(dirs["figures_dir"]))
    for ext in (".png", ".pdf"):
        assert p.figure("fig05_explained_variance").with_suffix(ext).stat().st_size > 1000
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    assert list(table.columns) == ["layer", "d", "curve", "k80", "k99"]
    assert list(table.layer.unique()) == list(p.layers)
    assert set(table[table.layer == "fc3"].curve) == {"pca_pre_relu", "neuron_pre_relu"}
    assert (table.k80 <= table.k99).all() and (table.k99 <= table.d).all()
    # PCs concentrate the variance: never more PCs than neurons are needed for 80 %
    wide = table.pivot(index="layer", columns="curve", values="k80")
    assert (wide.pca_pre_relu <= wide.neuron_pre_relu).all()
    assert len(np.load(p.artifact("sample") / "conv1.npy")) == p.n_sample
