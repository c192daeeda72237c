"""The paper's published values drawn beside the reproduced ones in Figs. 5, 6 and 7.

:mod:`helpers.plots` calls these when given the tables of :mod:`helpers.reference`. Each draws on one panel the
published curves or points of what the panel shows, in the basis' colour, labelled "published". A reproduced
line style has one published counterpart (:data:`STYLE`: solid → dotted, dashed → dash-dot), so a published
curve never looks like a reproduced one; Fig. 7's reproduced points are solid, its published ones dashed.
"""
from __future__ import annotations

from collections.abc import Mapping

STYLE = {"-": ":", "--": "-."}
"""A reproduced line style → the style of the published curve beside it."""

EXPLAINED_VARIANCE_CAPTION = (
    "Published: the paper's curves (dotted; PCA post-ReLU dash-dot), read from the authors' vector figure, at k = "
    "the figure's x position + 1 (its x axis counts from 0, so its printed counts are one less than the number "
    "of vectors).")

ABLATION_CAPTION = (
    "Published (dotted: descending, dash-dot: ascending): the paper's curves, read from the authors' vector "
    "figure and drawn through the vertices stored in it. The figure's export dropped many vertices (near-collinear "
    "ones); the lines join the points that exist, and ablation_vs_published.csv compares only the counts at which "
    "a published vertex exists.")


def line_style(reproduced: str) -> str:
    """The line style of a published curve drawn beside a reproduced one of style ``reproduced``."""
    return STYLE.get(reproduced, ":")


def draw_explained_variance(ax, rows, styles: dict) -> int:
    """Fig. 5: the published curves of one layer on its panel.

    Parameters
    ----------
    ax : matplotlib Axes
    rows : DataFrame
        Rows of :func:`helpers.reference.explained_variance` (``layer, curve,
        k, value``) of the panel's layer.
    styles : dict
        ``{curve: dict(color, ls, label)}`` of the reproduced curves on the
        panel; only these curves are drawn.

    Returns
    -------
    int
        The number of published curves drawn.
    """
    drawn = 0
    for curve, style in styles.items():
        found = rows[rows["curve"] == curve].sort_values("k")
        if len(found):
            ax.plot(found["k"], found["value"], color=style["color"], ls=line_style(style["ls"]), lw=1.2,
                    label=f"{style['label']}, published")
            drawn += 1
    return drawn


def draw_ablation(ax, rows, styles: dict) -> int:
    """Fig. 6: the published curves of one layer, through their stored vertices only.

    Parameters
    ----------
    ax : matplotlib Axes
    rows : DataFrame
        Rows of :func:`helpers.reference.ablation` (``layer, basis, order,
        n_ablated, top1``) of the panel's layer.
    styles : dict
        ``{(basis, order): dict(color, ls, label)}`` of the reproduced curves
        on the panel; only these curves are drawn.

    Returns
    -------
    int
        The number of published curves drawn.
    """
    drawn = 0
    for (basis, order), style in styles.items():
        found = rows[(rows["basis"] == basis) & (rows["order"] == order)].sort_values("n_ablated")
        if len(found):
            ax.plot(found["n_ablated"], found["top1"], color=style["color"], ls=line_style(style["ls"]), lw=1.2,
                    label=f"{style['label']}, published")
            drawn += 1
    return drawn


def as_frame(published):
    """Fig. 7's published values as a DataFrame ``layer, basis, accuracy, sem``.

    ``published`` is :func:`helpers.reference.user_study` (returned as is) or ``{layer: (pca, neuron)}``
    accuracies such as ``reference.USER_STUDY_ACCURACY`` (no standard error).
    """
    import pandas as pd

    if isinstance(published, Mapping):
        return pd.DataFrame([{"layer": layer, "basis": basis, "accuracy": acc, "sem": float("nan")}
                             for layer, pair in published.items() for basis, acc in zip(("pca", "neuron"), pair)])
    missing = {"layer", "basis", "accuracy", "sem"} - set(published.columns)
    if missing:
        raise ValueError(f"the published Fig. 7 values lack the columns {sorted(missing)}: pass "
                         "helpers.reference.user_study().")
    return published


def draw_user_study(ax, published, x: dict, styles: dict, participants: int) -> int:
    """Fig. 7: the published accuracy of each layer and basis, dashed, ± its standard error.

    Parameters
    ----------
    ax : matplotlib Axes
    published : DataFrame or dict
        :func:`helpers.reference.user_study`, or ``{layer: (pca, neuron)}`` (see :func:`as_frame`).
    x : dict
        ``{layer: x position}`` of the panel's layers; other layers are not drawn.
    styles : dict
        ``{basis: dict(color, label)}`` of the reproduced bases; only these are drawn.
    participants : int
        The number of participants the published values average over (in the label).

    Returns
    -------
    int
        The number of published series drawn.
    """
    frame = as_frame(published)
    drawn = 0
    for basis, style in styles.items():
        found = frame[(frame["basis"] == basis) & frame["layer"].isin(list(x))]
        if not len(found):
            continue
        found = found.assign(x=found["layer"].map(x)).sort_values("x")
        ax.plot(found["x"], found["accuracy"], color=style["color"], ls="--", marker="s", ms=3, clip_on=False,
                label=f"{style['label']}, published ({participants} participants)")
        ax.errorbar(found["x"], found["accuracy"], yerr=found["sem"].fillna(0), fmt="none", ecolor=style["color"],
                    elinewidth=0.9, capsize=2, clip_on=False)
        drawn += 1
    return drawn
