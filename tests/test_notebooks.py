"""The notebooks: committed clean, paired with their .py, and run headless by papermill (those committed at
HEAD: :func:`tests.conftest.notebooks_folder`)."""
import ast
import json
import re
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from PIL import Image

from helpers import bases, models
from helpers.images import select
from helpers import run
from helpers.pipeline import provenance
from helpers.pipeline.settings import ROOT, SETTINGS
from standins import check_standin_run
from tests.conftest import notebooks_folder, runner_command


@pytest.mark.parametrize("path", sorted(notebooks_folder().glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_clean_paired_and_has_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = pm.inspect_notebook(str(path))
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert set(declared) == assigned, "papermill cannot parse a line of the parameters cell (an '=' in a comment?)"
    own = {"min_rt_ms"} if path.stem == "study_app" else set()  # the app's own parameter
    assert "profile" in declared and "settings" in declared and set(declared) - {"profile", "settings"} - own \
        <= set(SETTINGS), "a parameters cell lists the profile, settings of its step and the dict of others"
    assert all(p["inferred_type_name"] in ("str", "None", "int", "float", "bool") for p in declared.values())
    paired = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], \
        f"run `jupytext --sync {path}`"


def cell_settings(number: str) -> set:
    """The settings a numbered notebook's parameters cell lists."""
    path = next(notebooks_folder().glob(f"{number}_*.ipynb"))
    return set(pm.inspect_notebook(str(path))) - {"profile", "settings"}


def upstream_steps(number: str) -> set:
    """The notebooks that make what a notebook reads, and what those read, recursively."""
    found = set()
    for artifact in provenance.notebooks()[number].reads:
        maker = provenance.producer(artifact).number
        found |= {maker} | upstream_steps(maker)
    return found


OPTIONAL = {"08": {"broden_subset", "broden_categories", "mask_size"}}
"""Settings a cell lists that the smoke profile does not read (they shape Broden's probe set)."""
ALSO_READS = {"04": {"08"}}
"""04's explorer shows 08's formulas beside a grid when they exist, reading their key."""
INJECTED = {"data_dir", "figures_dir"}
"""Where artifacts and figures go: the runner and the tests give them to every notebook."""


def test_every_setting_a_notebook_reads_is_in_its_cell_or_an_upstream_steps(smoke):
    """A notebook's cell lists what its step reads; what else it reads keys the artifacts it is given (the
    cells of the notebooks that make them list it), or says where files go. Recorded on the smoke run."""
    traces = Path(smoke.data_dir).parent / "settings"
    for number, nb in provenance.notebooks().items():
        read = set((traces / f"{nb.notebook}.txt").read_text().split())
        allowed = cell_settings(number) | INJECTED
        for up in upstream_steps(number) | ALSO_READS.get(number, set()):
            allowed |= cell_settings(up)
        assert read - allowed == set(), f"{nb.notebook} reads settings of no step before it"
        assert cell_settings(number) - read - INJECTED <= OPTIONAL.get(number, set()), \
            f"{nb.notebook}'s cell lists settings its step did not read on the smoke profile"


def test_the_cell_check_can_fail(tmp_path):
    """The first notebook reads nothing upstream: a setting of 02 read by 01 would be refused."""
    assert upstream_steps("01") == set() and upstream_steps("06") == {"01", "02", "03", "04"}
    assert "bases" not in cell_settings("01") | INJECTED


def test_01_02_sample_and_explained_variance(smoke):
    p = smoke
    for ext in (".png", ".pdf"):
        assert p.figure("fig05_explained_variance").with_suffix(ext).stat().st_size > 1000
    table = pd.read_csv(p.figure("explained_variance_counts.csv"))
    assert list(table.columns) == ["layer", "d", "curve", "k80", "k99", "n_vectors"]
    assert list(table.layer.unique()) == list(p.layers)
    every = {"pca_pre_relu", "pca_post_relu", "neuron_pre_relu", "ica_pre_relu", "nmf_post_relu", "sae_pre_relu",
             "random_pre_relu"}
    assert set(table[table.layer == "conv1"].curve) == every
    assert set(table[table.layer == "fc3"].curve) == every - {"pca_post_relu", "nmf_post_relu"}  # no ReLU
    reached = table.dropna()
    assert (reached.k80 <= reached.k99).all() and (reached.k99 <= reached.n_vectors).all()
    sae = table[table.curve == "sae_pre_relu"]
    assert (sae.n_vectors == 4 * sae.d).all()
    # the generalised curve of the PCs is their cumulative explained-variance ratio
    for layer in p.layers:
        with np.load(p.artifact("bases") / f"{layer}_curves.npz") as curves:
            for curve in ("pca_pre_relu", "neuron_pre_relu", "random_pre_relu"):
                ratio = bases.load_basis(p.artifact("bases"), layer, curve).explained_variance_ratio_
                np.testing.assert_allclose(curves[curve], np.cumsum(ratio), atol=1e-6)
    # PCs concentrate the variance: never more PCs than neurons are needed for 80 %
    wide = table.pivot(index="layer", columns="curve", values="k80")
    assert (wide.pca_pre_relu <= wide.neuron_pre_relu).all()
    assert len(np.load(p.artifact("sample") / "conv1.npy")) == p.n_sample
    # cells print results, not sidecar dictionaries; counts are integers
    outputs = {}
    for name in ("01_sample", "02_pca"):
        nb = nbformat.read(p.data_path.parent.parent / f"{name}.ipynb", as_version=4)
        outputs[name] = ["".join(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
                         for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(text.lstrip().startswith("{") for texts in outputs.values() for text in texts)
    assert any("mini_alexnet (AlexNet family), test accuracy" in text for text in outputs["01_sample"])
    (counts,) = [text for text in outputs["02_pca"] if "k80" in text]
    assert not re.search(r"\d\.0\b", counts), counts


def test_03_04_index_grids_and_figures(smoke):
    p = smoke
    meta = json.loads((p.artifact("index") / "meta.json").read_text())
    assert meta["vectors"]["conv1"] == p.index_cap and meta["vectors"]["fc1"] == p.n_eval
    for layer in p.layers:
        for ext in (".png", ".pdf"):
            assert p.figure(f"fig_grids_{layer}").with_suffix(ext).exists()
        grids = sorted(path.name for path in (p.artifact("grids") / layer).glob("*.png"))
        fitted = bases.layer_bases(p.artifact("bases"), layer, p.bases)
        assert set(fitted) == set(p.bases) - ({"nmf"} if layer == "fc3" else set())  # NMF: after a ReLU
        expect = sorted(f"{b}_{j:04d}.png" for b, f in fitted.items()
                        for j in range(1, min(p.n_show, len(f.components_)) + 1))
        assert grids == expect
        image = np.asarray(Image.open(p.artifact("grids") / layer / "pca_0001.png"))
        gap = 2
        assert image.shape[:2] == (p.n_neighbours * (p.thumb + gap) - gap, p.n_targets * (p.thumb + gap) - gap)
    assert p.figure("fig12_toy_distance_vs_activation").with_suffix(".pdf").exists()


def test_explorer_shows_the_chosen_grid(smoke, tmp_path):
    from helpers.explorer import explorer

    panel = explorer(profile=smoke, data_dir=str(tmp_path))  # the other profiles: an empty folder
    (pick_profile, pick_layer), (pick_basis, pick_comp) = (panel.children[0].children, panel.children[1].children)
    label, picture = panel.children[2], panel.children[3]
    assert pick_layer.value == smoke.layers[0] and pick_basis.value == "pca"  # opens on a grid
    assert picture.value[:8] == b"\x89PNG\r\n\x1a\n" and f"{smoke.layers[0]} PC 1" in label.value
    pick_basis.value = "neuron"  # a basis first, then the layer: no "layer=None"
    pick_layer.value = "conv2"
    pick_comp.value = 3
    assert picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "conv2 neuron" in label.value and "% of variance" in label.value
    pick_basis.value = "pca"
    assert "conv2 PC 3" in label.value
    table = pd.read_csv(smoke.figure("compositional_explanations.csv"), keep_default_na=False)
    row = table[(table.layer == "conv2") & (table.basis == "pca") & (table.component == 3)].iloc[0]
    assert f"+ {row.formula or '(none)'} (IoU {row.iou:.2f})".replace("&", "&amp;") in label.value
    pick_layer.value = "fc1"  # no map: no formula
    assert "fc1 PC 3" in label.value and "compositional" not in label.value
    assert picture.layout.display is None
    pick_profile.value = "paper"  # no artifacts: fails and clears the grid
    assert picture.value == b"" and picture.layout.display == "none"


def test_explorer_on_a_profile_without_artifacts_loads_no_model(tmp_path, monkeypatch):
    from helpers import explorer as ex
    from helpers.grids import visualize
    from helpers.pipeline.settings import load_profile

    monkeypatch.setattr(visualize, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    panel = ex.explorer(profile=load_profile("paper", data_dir=str(tmp_path)))
    label, picture = panel.children[2], panel.children[3]
    assert "profile paper has no sample for alexnet and these settings yet: run 01_sample" in label.value
    assert picture.value == b"" and picture.layout.display == "none"


def test_05_ablation_table_and_figure(smoke):
    p = smoke
    table = pd.read_csv(p.figure("ablation.csv"))
    assert list(table.columns) == ["layer", "basis", "order", "n_ablated", "top1"]
    assert list(table.layer.unique()) == list(p.layers)
    assert set(zip(table.basis, table.order)) == {(b, o) for b in p.bases for o in ("descending", "ascending")}
    assert set(table[table.layer == "fc3"].basis) == set(p.bases) - {"nmf"}
    original = table[table.n_ablated == 0].top1
    assert len(original) == 2 * (6 * len(p.layers) - 1)  # every basis, both orders
    assert original.nunique() == 1  # nothing ablated, whatever the basis: the same accuracy at every layer
    complete = table[table.basis.isin(["pca", "neuron", "random"])]
    full = complete[complete.n_ablated == complete.groupby("layer").n_ablated.transform("max")]
    assert full.groupby("layer").top1.nunique().eq(1).all()  # all d of any orthonormal basis ablated: one accuracy
    sae = table[table.basis == "sae"]
    assert (sae.groupby("layer").n_ablated.max() == 4 * complete.groupby("layer").n_ablated.max()).all()
    for ext in (".png", ".pdf"):
        assert p.figure("fig06_ablation").with_suffix(ext).stat().st_size > 1000


def test_06_stimuli_machine_observer_and_trial_figure(smoke):
    p = smoke
    stimuli = pd.read_csv(p.artifact("stimuli") / "stimuli.csv")
    per_cell = stimuli.groupby(["layer", "basis"]).size()
    assert len(per_cell) == 6 * len(p.layers) - 1 and (per_cell == p.n_study).all()  # fc3: no NMF
    log = [json.loads(line) for line in (p.artifact("responses") / "machine" / "pixel-smoothness.jsonl").open()]
    assert sorted(r["stimulus_id"] for r in log) == sorted(stimuli.stimulus_id)
    assert {r["observer"] for r in log} == {"machine"}
    assert not (p.artifact("responses") / "human").exists()
    for ext in (".png", ".pdf"):
        assert p.figure("fig14_study_trial").with_suffix(ext).stat().st_size > 1000


def test_07_accuracy_table_tests_and_figure(smoke):
    p = smoke
    table = pd.read_csv(p.figure("user_study_accuracy.csv"))
    assert list(table.columns) == ["observer", "layer", "basis", "n", "accuracy", "sem"]
    assert set(table.observer) == {"machine"} and (table.n == p.n_study).all()
    log = pd.read_json(p.artifact("responses") / "machine" / "pixel-smoothness.jsonl", lines=True)
    expect = log.groupby(["layer", "basis"]).correct.mean()
    got = table.set_index(["layer", "basis"]).accuracy
    np.testing.assert_allclose(got.sort_index(), expect.sort_index())
    tests = pd.read_csv(p.figure("user_study_tests.csv"))
    assert list(tests.layer) == [*p.layers, "all"] and tests.test.str.startswith("McNemar").all()
    for ext in (".png", ".pdf"):
        assert p.figure("fig07_user_study").with_suffix(ext).stat().st_size > 1000


def test_06_07_machine_scores_of_every_basis_the_random_one_too(smoke):
    """06's machine artifact and 07's table: every studied vector of every basis, the grid observer on grids drawn
    three ways, the held-out-query score in every band; one score recomputed from the index and the basis."""
    from helpers.pipeline import provenance
    from helpers.pipeline.settings import load_profile
    from helpers.search import load_index
    from helpers.study import machine, mis
    from helpers.study.stimuli import _rng

    p = smoke
    scores, grid_answers = machine.load_machine(p, provenance.expected(p, "machine"))
    cells = scores.groupby(["layer", "basis"]).size()
    assert len(cells) == 6 * len(p.layers) - 1 and (cells == p.n_study * len(p.mis_bands)).all()
    assert scores.score.between(0, 1).all() and scores.hard.between(0, 1).all()
    assert set(grid_answers.grids) == {"allow", "patch", "grid"} and set(grid_answers.correct) <= {0, 0.5, 1}
    table = pd.read_csv(p.figure("machine_interpretability.csv"))
    assert list(table.columns) == machine.TABLE_COLUMNS and "random" in set(table.basis)
    assert table.measure.nunique() == 3 + len(p.mis_bands) and (table.n == p.n_study).all()
    assert ((table.ci_low <= table.score + 1e-12) & (table.score <= table.ci_high + 1e-12)).all()
    for ext in (".png", ".pdf"):
        assert p.figure("fig_machine_interpretability").with_suffix(ext).stat().st_size > 1000
    # conv2's first random vector in the first band, from the stored index vectors and the basis
    layer, basis, q = "conv2", "random", p.mis_bands[0]
    index, loc = load_index(p.artifact("index"), layer)
    vectors = index.reconstruct_n(0, index.ntotal).astype(np.float64)
    b = bases.load_basis(p.artifact("bases"), layer, basis)
    codes = vectors @ b.components_[0]  # an orthonormal basis: the code is the projection of the centred vector
    tasks = mis.band_tasks(codes, q, p.mis_tasks, p.mis_references, _rng(p.seed, "mis", layer, basis, 0, q))
    images = models.load_dataset(p, p.eval_split)
    net, _ = models.load_model(p, train=False)
    from helpers.images.common import example
    from helpers.models.receptive import crop, receptive_fields

    field = receptive_fields(net, [layer], example(images))[layer]
    E = np.stack([crop(images.display(int(i)), field.box(int(y), int(x)), p.thumb).ravel() / 255
                  for i, y, x in np.asarray(loc)])
    expected = mis.score(mis.deltas(E, tasks, "rms"), None)
    got = scores[(scores.layer == layer) & (scores.basis == basis) & (scores.component == 1) & (scores.band == q)]
    assert got.score.iloc[0] == pytest.approx(expected, abs=1e-12)
    # another band is another key: another folder, never this artifact
    other = load_profile("smoke", **{**{k: getattr(p, k) for k in ("data_dir", "figures_dir", "bases")},
                                     "mis_bands": "0.1,0.3"})
    assert provenance.status(other, "machine")[0] == "missing" and other.artifact("machine") != p.artifact("machine")


def _parse(text, concepts):
    """A formula's text back into a Formula (names to numbers)."""
    import re

    from helpers.explain.formula import Formula

    parts = re.split(r" (OR|AND NOT|AND) ", text.replace("(", "").replace(")", ""))
    f = Formula(concepts.number(parts[0]))
    for op, name in zip(parts[1::2], parts[2::2]):
        f = f.then(op, concepts.number(name))
    return f


def test_08_formulas_and_ious_equal_a_recomputation_from_scratch(smoke):
    """Every column of the tables, and two units' IoUs recomputed with plain torch/numpy from the model."""
    import torch
    import torch.nn.functional as F

    from helpers.images import concepts as cs

    p = smoke
    table = pd.read_csv(p.figure("compositional_explanations.csv"), keep_default_na=False)
    assert list(table.columns) == ["layer", "basis", "component", "sign", "formula", "length", "iou", "iou_length1"]
    maps = [l for l in p.layers if l.startswith("conv")]
    assert list(table.layer.unique()) == maps  # fc layers have no map
    per_layer = table.groupby("layer").size()
    assert (per_layer == 9 * p.n_study).all()  # PCs, ICs, random vectors both signs; neurons, NMF, SAE latents
    assert table.iou.between(0, 1).all() and (table.iou >= table.iou_length1 - 1e-12).all()
    assert table.length.between(0, p.max_length).all()
    rho = pd.read_csv(p.figure("compositional_vs_ablation.csv"))
    assert list(rho.columns[:5]) == ["layer", "basis", "n_units", "spearman_rho", "p_value"]
    assert (rho.n_units == p.n_study).all() and len(rho) == 6 * len(maps)
    for name in ("fig_compositional_iou", "fig_compositional_iou_by_length", "fig_compositional_examples"):
        for ext in (".png", ".pdf"):
            assert p.figure(name).with_suffix(ext).stat().st_size > 1000

    net, _ = models.load_model(p, train=False)
    images = models.load_dataset(p, p.eval_split)
    indices = select(len(images), p.n_probe, p.seed)
    concepts = cs.FashionConcepts.of(images, indices)
    x = torch.stack([images[int(i)][0] for i in indices])
    masks = np.zeros((len(concepts.names), len(indices), 28, 28), bool)
    for i in range(len(indices)):
        pixel, image = concepts.labels(i)
        for c in range(1, len(concepts.names)):
            masks[c, i] = (pixel == c).any(0) | (c in image)
    for layer, basis, sign in (("conv2", "pca", "-"), ("conv3", "neuron", "+"), ("conv2", "sae", "+")):
        row = table[(table.layer == layer) & (table.basis == basis) & (table.sign == sign)].iloc[0]
        fitted = bases.load_basis(p.artifact("bases"), layer, basis)
        v = fitted.components_[row.component - 1] * (1 if sign == "+" else -1)
        got = []
        module = net.get_submodule(models.resolve(net, [layer])[layer])
        handle = module.register_forward_hook(lambda m, a, out: got.append(out.detach().clone()))
        with torch.no_grad():
            net(x)
        handle.remove()
        a = got[0].double().numpy()
        if basis == "sae":  # a latent's map: its code at every position (the SAE's own encoder, float32)
            rows = torch.from_numpy(a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])).float()
            unit = fitted.encode(rows)[:, row.component - 1].double().numpy().reshape(a.shape[0], *a.shape[2:])
        else:
            unit = np.einsum("nchw,c->nhw", a, v) - (fitted.mean_ @ v if basis == "pca" else 0)
        thr = np.quantile(unit.ravel(), 1 - p.quantile)
        up = F.interpolate(torch.from_numpy(unit).float()[:, None], size=(28, 28), mode="bilinear",
                           align_corners=False)[:, 0].numpy()
        A = up > thr
        formula = _parse(row.formula, concepts)
        M = formula.evaluate(lambda c: masks[c])
        inter = np.count_nonzero(M & A)
        assert row.iou == pytest.approx(inter / (np.count_nonzero(M) + A.sum() - inter), abs=1e-9), row.formula
        firing = A.reshape(len(A), -1).any(1)
        singles = [np.count_nonzero(masks[c] & A) / np.count_nonzero(masks[c] | A)
                   for c in range(1, len(masks)) if masks[c][firing].any()]
        assert row.iou_length1 == pytest.approx(max(singles), abs=1e-9)


def test_all_eight_notebooks_run_for_mini_resnet(tmp_path):
    """The runner (papermill) on smoke, 01-08, with a residual network (its shipped weights: training is tested
    on mini_alexnet). The vision transformer runs 01-08 in tests/test_controls.py, trained and untrained."""
    import subprocess

    model = "mini_resnet"
    dirs = {"data_dir": str(tmp_path / "data"), "figures_dir": str(tmp_path / "figures")}
    cmd = [*runner_command(), "--profile", "smoke", "-p", f"model={model}", "-p", "retrain=False",
           *(a for k, v in dirs.items() for a in ("-p", f"{k}={v}"))]
    done = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    from helpers.pipeline.settings import load_profile

    check_standin_run(load_profile("smoke", model=model, retrain=False, **dirs), {"pca", "neuron"})


def test_08_optimal_search_keeps_the_beam_beside_a_certified_optimum(copy):
    """formula_search='optimal' remakes only 08; every unit's optimum is at least its beam formula."""
    from helpers.pipeline.settings import load_profile

    before = pd.read_csv(copy.artifact("compositional") / "units.csv", keep_default_na=False)
    said = []
    run.run("smoke", only=["08"], parameters={**copy.params, "formula_search": "optimal"}, say=said.append)
    assert said[0] == f"plan (smoke, {copy.data}): 08_compositional"
    p = load_profile("smoke", **copy.params, formula_search="optimal")
    units = pd.read_csv(p.artifact("compositional") / "units.csv", keep_default_na=False)
    assert (units.iou_optimal >= units.iou_beam - 1e-12).all() and (units.iou == units.iou_optimal).all()
    assert (units.formula == units.formula_optimal).all()
    assert (before.iou == units.iou_beam).all() and (before.formula_beam == units.formula_beam).all()
    gaps = pd.read_csv(p.figure("compositional_optimality.csv"))
    assert list(gaps.columns) == ["layer", "basis", "n_units", "suboptimal", "suboptimal_share", "mean_iou_left",
                                  "max_iou_left"]
    assert gaps.suboptimal_share.between(0, 1).all() and (gaps.mean_iou_left >= -1e-12).all()
    assert gaps.n_units.sum() == len(units)
