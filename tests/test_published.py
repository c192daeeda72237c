"""The published values drawn beside the reproduced ones in Figs. 5, 6 and 7, and nothing drawn without them."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from helpers import plots, published, reference


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labels(ax) -> list[str]:
    return [line.get_label() for line in ax.lines]


def marked(fig) -> list[list[str]]:
    """Per panel, the labels of the lines marked published."""
    return [[label for label in labels(ax) if "published" in label] for ax in fig.axes if ax.get_visible()]


def line(ax, label: str):
    found = [ln for ln in ax.lines if ln.get_label() == label]
    assert len(found) == 1, (label, labels(ax))
    return found[0]


def test_fig5_draws_the_published_curves_of_the_layers_both_have():
    curves = {"conv1": {c: np.linspace(0.1, 1, 64) for c in ("pca_pre_relu", "pca_post_relu", "neuron_pre_relu")},
              "mine": {"pca_pre_relu": np.linspace(0.2, 1, 10), "neuron_pre_relu": np.linspace(0.1, 1, 10)}}
    ev = reference.explained_variance()
    fig = plots.explained_variance(curves, published=ev)
    assert marked(fig) == [["PCA (pre-ReLU), published", "PCA (post-ReLU), published",
                            "neurons (pre-ReLU), published"], []]
    ax = fig.axes[0]
    pre = line(ax, "PCA (pre-ReLU), published")
    rows = ev[(ev.layer == "conv1") & (ev.curve == "pca_pre_relu")]
    assert list(pre.get_xdata()) == list(rows.k) and np.allclose(pre.get_ydata(), rows.value)
    for curve in ("PCA (pre-ReLU)", "PCA (post-ReLU)", "neurons (pre-ReLU)"):  # never drawn like a reproduced one
        mine, theirs = line(ax, curve), line(ax, f"{curve}, published")
        assert theirs.get_color() == mine.get_color() and theirs.get_linestyle() != mine.get_linestyle()
    assert line(ax, "PCA (pre-ReLU), published").get_linestyle() != line(ax, "PCA (post-ReLU)").get_linestyle()
    plain = plots.explained_variance(curves)
    assert marked(plain) == [[], []] and not plain.texts


def ablation_table(layers=("conv1", "mine"), counts=(0, 1, 2, 4, 8, 16, 32, 64)):
    return pd.DataFrame([{"layer": layer, "basis": basis, "order": order, "n_ablated": n, "top1": 0.5 - 0.005 * n}
                         for layer in layers for basis in ("pca", "neuron") for order in ("descending", "ascending")
                         for n in counts])


def test_fig6_draws_the_published_curves_through_their_stored_vertices_with_a_caption():
    ab = reference.ablation()
    fig = plots.ablation(ablation_table(("conv1", "mine", "fc1")), published=ab)
    assert [len(found) for found in marked(fig)] == [4, 0, 4]
    assert "PCA, descending, published" in marked(fig)[0]
    ax = fig.axes[2]
    drawn = line(ax, "PCA, descending, published")
    stored = ab[(ab.layer == "fc1") & (ab.basis == "pca") & (ab.order == "descending")]
    assert len(stored) == 16 and list(drawn.get_xdata()) == list(stored.n_ablated)  # no vertex added
    assert np.allclose(drawn.get_ydata(), stored.top1)
    for colour in ("tab:blue", "tab:orange"):  # within a basis' colour, published never looks reproduced
        same = [ln for ln in ax.lines if ln.get_color() == colour]
        mine = {ln.get_linestyle() for ln in same if "published" not in ln.get_label()}
        theirs = {ln.get_linestyle() for ln in same if "published" in ln.get_label()}
        assert len(mine) == len(theirs) == 2 and mine.isdisjoint(theirs)
    assert any("dropped" in t.get_text() for t in fig.texts)
    plain = plots.ablation(ablation_table())
    assert marked(plain) == [[], []] and not plain.texts


def test_fig6_without_a_shared_layer_draws_no_published_curve_and_no_caption():
    fig = plots.ablation(ablation_table(("mine",)), published=reference.ablation())
    assert marked(fig) == [[]] and not fig.texts


def study_table(layers=("conv1", "fc1", "mine")):
    rows = [{"observer": observer, "layer": layer, "basis": basis, "n": 4, "accuracy": 0.75, "sem": 0.05}
            for observer in ("human", "machine") for layer in layers for basis in ("pca", "neuron")]
    return pd.DataFrame(rows)


def test_fig7_draws_the_published_points_with_their_standard_error():
    us = reference.user_study()
    fig = plots.user_study(study_table(), published=us)
    want = ["PCA, published (22 participants)", "neurons, published (22 participants)"]
    assert marked(fig) == [want, want]
    for ax in fig.axes[:2]:
        pca = line(ax, want[0])
        assert list(pca.get_xdata()) == [0, 1] and pca.get_linestyle() == "--"  # conv1, fc1; not "mine"
        assert np.allclose(pca.get_ydata(), [327 / 352, 309 / 352])
        bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
        spans = sorted(tuple(np.round(seg[:, 1], 4)) for c in bars for seg in c.get_segments())
        for acc, sem in zip((327 / 352, 309 / 352), (0.0161, 0.0154)):
            assert tuple(np.round((acc - sem, acc + sem), 4)) in spans
    plain = plots.user_study(study_table())
    assert marked(plain) == [[], []]


def test_fig7_takes_the_accuracies_as_a_dict_too():
    fig = plots.user_study(study_table(), published=reference.USER_STUDY_ACCURACY)
    assert len(marked(fig)[0]) == 2
    with pytest.raises(ValueError, match="reference.user_study"):
        plots.user_study(study_table(), published=pd.DataFrame({"layer": ["conv1"]}))


def test_each_reproduced_style_has_a_distinct_published_one():
    assert published.line_style("-") != "-" and published.line_style("--") not in ("-", "--")
    assert len(set(published.STYLE.values())) == len(published.STYLE)
