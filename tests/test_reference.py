"""The paper's numbers: the shipped published values, their agreement with the printed ones, the comparisons."""
from __future__ import annotations

import csv
import fnmatch
import tomllib

import numpy as np
import pandas as pd
import pytest

from helpers import reference
from helpers.reference import figures
from helpers.pipeline.settings import ROOT

ROWS = {"fig5": 852, "fig6": 4271, "fig7": 16}
"""Rows of each shipped file (paper/figures/README.md)."""

OLD_ACCURACY = {
    "conv1": (0.93, 0.90), "conv2": (0.93, 0.82), "conv3": (0.88, 0.85), "conv4": (0.84, 0.81),
    "conv5": (0.84, 0.79), "fc1": (0.88, 0.71), "fc2": (0.90, 0.67), "fc3": (0.85, 0.82),
}
"""Fig. 7's means read off the figure to two decimals (the values the exact ones replace)."""

CORRECT = {"conv1": (327, 317), "conv2": (326, 287), "conv3": (309, 299), "conv4": (295, 285),
           "conv5": (296, 278), "fc1": (309, 249), "fc2": (317, 235), "fc3": (298, 287)}
"""Correct answers of 352 trials, PCA and neuron, as the design page lists them."""


def raw(figure: str) -> list[dict]:
    with figures.path(figure).open(newline="") as f:
        return list(csv.DictReader(f))


# -- the shipped files ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("figure", sorted(ROWS))
def test_shipped_file_parses_with_its_rows_and_columns(figure):
    rows = raw(figure)
    assert len(rows) == ROWS[figure]
    assert tuple(rows[0]) == figures.COLUMNS[figure]
    assert all(all(v != "" for v in row.values()) for row in rows)


def test_loaders_give_this_packages_names():
    ev, ab, us = reference.explained_variance(), reference.ablation(), reference.user_study()
    assert list(ev.columns) == ["layer", "curve", "k", "value"] and len(ev) == 852
    assert list(ab.columns) == ["layer", "basis", "order", "n_ablated", "top1"] and len(ab) == 4271
    assert list(us.columns) == ["layer", "basis", "accuracy", "sem", "correct", "trials"] and len(us) == 16
    assert set(ev.curve) == {"pca_pre_relu", "pca_post_relu", "neuron_pre_relu"}
    assert ev.groupby(["layer", "curve"]).ngroups == 23 and not (ev.layer.eq("fc3") & ev.curve.eq("pca_post_relu")).any()
    assert set(ab.basis) == set(us.basis) == {"pca", "neuron"} and set(ab.order) == {"descending", "ascending"}
    assert ab.groupby(["layer", "basis", "order"]).ngroups == 32
    assert list(dict.fromkeys(ev.layer)) == list(reference.LAYER_DIMS) == list(dict.fromkeys(ab.layer))
    # k is the number of vectors: the file's x position + 1
    file_k = sorted(int(r["x_plotted"]) + 1 for r in raw("fig5"))
    assert sorted(ev.k) == file_k and all(int(r["k"]) == int(r["x_plotted"]) + 1 for r in raw("fig5"))


def test_loaders_return_a_new_frame_each_call():
    first = reference.ablation()
    first["top1"] = 0.0
    assert reference.ablation()["top1"].max() > 0.5


def test_a_missing_file_or_figure_says_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(figures, "HERE", tmp_path)
    with pytest.raises(FileNotFoundError, match="pip install"):
        figures.path("fig6")
    with pytest.raises(ValueError, match="fig5, fig6, fig7"):
        figures.path("fig8")


def test_pyproject_ships_every_data_file_of_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["helpers.reference"]
    shipped = [p.name for p in figures.HERE.iterdir() if p.suffix != ".py" and p.is_file()]
    assert sorted(shipped) == sorted([*figures.FILES.values(), "README.md"])
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)


# -- Fig. 5: the curves against the counts printed on the figure ---------------------------------------------

@pytest.mark.parametrize("layer", list(reference.EXPLAINED_VARIANCE_COUNTS))
def test_fig5_curves_agree_with_the_printed_counts(layer):
    """The printed count is the first x position at or above the threshold, unless its vertex was dropped."""
    ev = reference.explained_variance()
    for curve, printed in reference.EXPLAINED_VARIANCE_COUNTS[layer].items():
        points = ev[(ev.layer == layer) & (ev.curve == curve)].sort_values("k")
        x, value = points.k.to_numpy() - 1, points.value.to_numpy()
        assert len(points), (layer, curve)
        for threshold, count in zip((0.80, 0.99), printed):
            first = x[np.argmax(value >= threshold)]
            assert (value >= threshold).any() and first >= count, (layer, curve, threshold)
            assert first == count or count not in x, (layer, curve, threshold)
            assert value[x < count][-1] < threshold, (layer, curve, threshold)


def test_fig5_check_can_fail():
    """A count one position earlier than printed contradicts the stored points somewhere."""
    ev = reference.explained_variance()
    failures = 0
    for layer, curves in reference.EXPLAINED_VARIANCE_COUNTS.items():
        for curve, (k80, _) in curves.items():
            points = ev[(ev.layer == layer) & (ev.curve == curve)]
            x, value = points.k.to_numpy() - 1, points.value.to_numpy()
            first = x[np.argmax(value >= 0.8)]
            failures += not (first >= k80 - 1 and (first == k80 - 1 or k80 - 1 not in x))
    assert failures > 0


def test_counts_beside_paper_shows_the_printed_labels_and_the_number_of_vectors():
    table = pd.DataFrame({"layer": ["conv1", "fc3", "fc3"], "d": [64, 1000, 1000],
                          "curve": ["pca_pre_relu", "pca_post_relu", "neuron_pre_relu"],
                          "k80": [12, 50, 700], "k99": [37, 600, 990]})
    out = reference.counts_beside_paper(table).set_index(["layer", "curve"])
    assert {"paper_k80", "paper_k99", "paper_printed_k80", "paper_printed_k99"} <= set(out.columns)
    assert tuple(out.loc[("conv1", "pca_pre_relu"), ["paper_printed_k80", "paper_printed_k99"]]) == (11, 36)
    assert tuple(out.loc[("conv1", "pca_pre_relu"), ["paper_k80", "paper_k99"]]) == (12, 37)
    assert tuple(out.loc[("fc3", "neuron_pre_relu"), ["paper_k80", "paper_k99"]]) == (710, 981)
    assert out.loc[("fc3", "pca_post_relu"), ["paper_k80", "paper_printed_k99"]].isna().all()


# -- Fig. 6 ------------------------------------------------------------------------------------------------

def test_fig6_curves_start_at_the_unablated_accuracy_and_end_at_their_grids_end():
    ab = reference.ablation()
    assert reference.ALEXNET_TOP1 == 0.5652
    ends = {layer: d for layer, d in reference.LAYER_DIMS.items()} | {"fc1": 4081, "fc2": 4081, "fc3": 996}
    for (layer, basis, order), curve in ab.groupby(["layer", "basis", "order"]):
        curve = curve.sort_values("n_ablated")
        assert curve.n_ablated.iloc[0] == 0 and curve.top1.iloc[0] == reference.ALEXNET_TOP1, (layer, basis, order)
        assert curve.n_ablated.iloc[-1] == ends[layer], (layer, basis, order)
        assert curve.n_ablated.is_unique


# -- Fig. 7 ------------------------------------------------------------------------------------------------

def test_fig7_accuracies_are_whole_answers_of_352_trials():
    for row in raw("fig7"):
        assert abs(float(row["accuracy"]) - int(row["correct_of_352"]) / 352) <= 1e-4, row
    us = reference.user_study()
    assert (us.trials == 352).all() and np.allclose(us.accuracy, us.correct / 352, rtol=0, atol=1e-15)
    assert reference.USER_STUDY_CORRECT == CORRECT


def test_exact_user_study_values_replace_the_approximate_ones():
    us = reference.user_study().set_index(["layer", "basis"])
    assert list(reference.USER_STUDY_ACCURACY) == list(OLD_ACCURACY)
    for layer, (pca, neuron) in reference.USER_STUDY_ACCURACY.items():
        assert (pca, neuron) == (CORRECT[layer][0] / 352, CORRECT[layer][1] / 352)
        assert np.allclose((pca, neuron), OLD_ACCURACY[layer], rtol=0, atol=0.006)
        assert reference.USER_STUDY_SEM[layer] == (us.loc[(layer, "pca"), "sem"], us.loc[(layer, "neuron"), "sem"])
        assert all(0 < s < 0.05 for s in reference.USER_STUDY_SEM[layer])
    assert (reference.USER_STUDY_PARTICIPANTS, reference.USER_STUDY_TRIALS) == (22, 352)


def test_beside_paper_adds_the_exact_accuracy_and_its_standard_error():
    table = pd.DataFrame({"observer": ["human"] * 2, "layer": ["fc2", "fc2"], "basis": ["pca", "neuron"],
                          "n": [3, 3], "accuracy": [0.9, 0.7], "sem": [0.01, 0.02]})
    merged = reference.user_study_beside_paper(table)
    assert list(merged.paper_accuracy) == [317 / 352, 235 / 352] and list(merged.paper_sem) == [0.0208, 0.0368]


# -- the tables of differences, against a brute-force computation -------------------------------------------

def test_explained_variance_vs_published_brute_force():
    rng = np.random.default_rng(0)
    curves = {"conv1": {"pca_pre_relu": np.sort(rng.random(6)), "neuron_pre_relu": np.sort(rng.random(6)),
                        "ica_pre_relu": np.sort(rng.random(6))},
              "mine": {"pca_pre_relu": np.sort(rng.random(4))}}
    published = pd.DataFrame({"layer": ["conv1"] * 5 + ["conv2"],
                              "curve": ["pca_pre_relu"] * 3 + ["neuron_pre_relu"] * 2 + ["pca_pre_relu"],
                              "k": [1, 3, 9, 2, 6, 1], "value": rng.random(6)})
    counts = pd.DataFrame({"layer": ["conv1", "conv1", "conv1", "mine"],
                           "curve": ["pca_pre_relu", "neuron_pre_relu", "ica_pre_relu", "pca_pre_relu"],
                           "k80": [5, None, 3, 2], "k99": [6, 6, 6, 4]})
    out = reference.explained_variance_vs_published(curves, counts, published)
    expect = []
    for layer, found in curves.items():
        for curve, values in found.items():
            for _, row in published.iterrows():
                if (row.layer, row.curve) == (layer, curve) and row.k <= len(values):
                    expect.append((layer, curve, "variance", row.k, values[row.k - 1], row.value))
    for _, row in counts.iterrows():
        for level, column in ((80, "k80"), (99, "k99")):
            printed = reference.EXPLAINED_VARIANCE_COUNTS.get(row.layer, {}).get(row.curve)
            if printed is not None and not pd.isna(row[column]):
                expect.append((row.layer, row.curve, f"k{level}", None, row[column], printed[level == 99] + 1))
    got = [(r.layer, r.curve, r.measure, None if pd.isna(r.k) else r.k, r.reproduced, r.published)
           for r in out.itertuples()]
    assert sorted(got, key=str) == sorted(expect, key=str)
    assert np.allclose(out.difference, out.reproduced - out.published)
    assert not ((out.curve == "pca_pre_relu") & (out.k == 9)).any()  # past the reproduced curve's end
    assert list(out.columns) == ["layer", "curve", "measure", "k", "reproduced", "published", "difference"]
    assert out.loc[out.measure == "k80", "published"].tolist() == [12.0]  # conv1 PCA: printed 11, 12 vectors


def test_ablation_vs_published_brute_force_never_interpolates():
    counts = [0, 1, 2, 3, 5, 8, 13]
    table = pd.DataFrame([{"layer": layer, "basis": basis, "order": order, "n_ablated": n, "top1": 0.5 - 0.01 * n}
                          for layer in ("conv1", "mine") for basis in ("pca", "neuron")
                          for order in ("descending", "ascending") for n in counts])
    stored = {("conv1", "pca", "descending"): [0, 2, 4, 8], ("conv1", "neuron", "ascending"): [0, 13, 14],
              ("conv2", "pca", "descending"): [0, 1]}
    published = pd.DataFrame([{"layer": l, "basis": b, "order": o, "n_ablated": n, "top1": 0.6 - 0.001 * n}
                              for (l, b, o), ns in stored.items() for n in ns])
    out = reference.ablation_vs_published(table, published)
    lookup = {(r.layer, r.basis, r.order, r.n_ablated): r.top1 for r in published.itertuples()}
    expect = [(r.layer, r.basis, r.order, r.n_ablated, r.top1, lookup[r.layer, r.basis, r.order, r.n_ablated])
              for r in table.itertuples() if (r.layer, r.basis, r.order, r.n_ablated) in lookup]
    assert [tuple(r) for r in out[["layer", "basis", "order", "n_ablated", "top1", "published_top1"]].itertuples(
        index=False)] == expect
    assert list(out.columns) == ["layer", "basis", "order", "n_ablated", "top1", "published_top1", "difference"]
    assert np.allclose(out.difference, out.top1 - out.published_top1)
    pca = out[(out.basis == "pca") & (out.order == "descending")]
    assert list(pca.n_ablated) == [0, 2, 8]  # 4: not reproduced; 1, 3, 5, 13: no published vertex
    assert 14 not in set(out.n_ablated) and "conv2" not in set(out.layer) and "mine" not in set(out.layer)


def test_ablation_vs_published_refuses_fractional_counts():
    table = pd.DataFrame({"layer": ["conv1"], "basis": ["pca"], "order": ["descending"], "n_ablated": [1.5],
                          "top1": [0.5]})
    with pytest.raises(ValueError, match="whole numbers"):
        reference.ablation_vs_published(table, reference.ablation())


def test_user_study_vs_published_brute_force():
    table = pd.DataFrame({"observer": ["human", "human", "machine", "machine", "machine"],
                          "layer": ["conv1", "fc1", "conv1", "fc1", "mine"],
                          "basis": ["pca", "neuron", "pca", "ica", "pca"], "n": 3,
                          "accuracy": [0.9, 0.6, 0.8, 0.7, 0.5], "sem": [0.01, 0.02, 0.03, 0.04, 0.05]})
    out = reference.user_study_vs_published(table)
    us = reference.user_study().set_index(["layer", "basis"])
    expect = [(r.observer, r.layer, r.basis, r.accuracy, r.sem, us.loc[(r.layer, r.basis), "accuracy"],
               us.loc[(r.layer, r.basis), "sem"]) for r in table.itertuples() if (r.layer, r.basis) in us.index]
    assert [tuple(r) for r in out.iloc[:, :7].itertuples(index=False)] == expect
    assert list(out.columns) == ["observer", "layer", "basis", "accuracy", "sem", "published_accuracy",
                                 "published_sem", "difference"]
    assert np.allclose(out.difference, out.accuracy - out.published_accuracy) and len(out) == 3


def test_summary_counts_the_points_and_names_the_largest_difference():
    out = pd.DataFrame({"layer": ["a", "b", "c"], "basis": ["pca"] * 3, "n_ablated": [1, 2, 3],
                        "difference": [0.1, -0.3, np.nan]})
    line = reference.summary(out, "Fig. 6")
    assert line.startswith("Fig. 6: 2 points compared, mean |difference| 0.2000, largest -0.3000 (b, pca, n_ablated = 2)")
    assert "no point" in reference.summary(out.iloc[2:], "Fig. 6")
