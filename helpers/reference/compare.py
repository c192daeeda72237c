"""Reproduced tables beside the paper's numbers, and their differences from the published values.

Pure functions of DataFrames: a published value is compared only where the reproduced table has a value at the
same count; nothing is interpolated.
"""
from __future__ import annotations

from collections.abc import Mapping

from . import figures
from .paper import EXPLAINED_VARIANCE_COUNTS, USER_STUDY_ACCURACY, USER_STUDY_SEM, vectors

KEYS = ("observer", "layer", "curve", "basis", "order", "measure", "k", "n_ablated")
"""Columns that name a compared point (in :func:`summary`)."""


def counts_beside_paper(table):
    """The reproduced ``explained_variance_counts`` table with the paper's counts beside it.

    Parameters
    ----------
    table : DataFrame
        Columns ``layer, d, curve, k80, k99`` (``explained_variance_counts.csv``).

    Returns
    -------
    DataFrame
        ``table`` with ``paper_printed_k80, paper_printed_k99`` (the labels on
        Fig. 5, positions on its 0-based x axis) and ``paper_k80, paper_k99``
        (the number of vectors: printed + 1, comparable to ``k80, k99``);
        blank where the paper has no curve (fc3 post-ReLU).
    """
    import pandas as pd

    paper = [{"layer": layer, "curve": curve, "paper_k80": vectors(k80), "paper_k99": vectors(k99),
              "paper_printed_k80": k80, "paper_printed_k99": k99}
             for layer, curves in EXPLAINED_VARIANCE_COUNTS.items() for curve, (k80, k99) in curves.items()]
    out = table.merge(pd.DataFrame(paper), on=["layer", "curve"], how="left")
    return out.astype({c: "Int64" for c in ("paper_k80", "paper_k99", "paper_printed_k80", "paper_printed_k99")})


def user_study_beside_paper(table):
    """The reproduced ``user_study_accuracy`` table with the paper's accuracy (correct / 352) and its s.e. beside it."""
    import pandas as pd

    paper = [{"layer": layer, "basis": basis, "paper_accuracy": acc, "paper_sem": sem}
             for layer, pair in USER_STUDY_ACCURACY.items()
             for basis, acc, sem in zip(("pca", "neuron"), pair, USER_STUDY_SEM[layer])]
    return table.merge(pd.DataFrame(paper), on=["layer", "basis"], how="left")


def curve_frame(curves: Mapping):
    """``{layer: {curve: ndarray (K,)}}`` (R² for k = 1 … K) as a DataFrame ``layer, curve, k, value``."""
    import numpy as np
    import pandas as pd

    parts = [pd.DataFrame({"layer": layer, "curve": curve, "k": np.arange(1, len(values) + 1),
                           "value": np.asarray(values, float)})
             for layer, found in curves.items() for curve, values in found.items()]
    if not parts:
        return pd.DataFrame({"layer": [], "curve": [], "k": np.array([], np.int64), "value": []})
    return pd.concat(parts, ignore_index=True)


def explained_variance_vs_published(curves, counts, published=None):
    """Fig. 5: the reproduced curves and counts against the published ones.

    Parameters
    ----------
    curves : DataFrame or dict
        The reproduced curves, columns ``layer, curve, k, value`` (or
        ``{layer: {curve: ndarray}}``, as :func:`curve_frame` takes).
    counts : DataFrame
        ``explained_variance_counts.csv`` (``layer, curve, k80, k99``).
    published : DataFrame, optional
        :func:`helpers.reference.explained_variance` (the default).

    Returns
    -------
    DataFrame
        Columns ``layer, curve, measure, k, reproduced, published, difference``
        (``difference = reproduced - published``). Rows with ``measure =
        "variance"``: one per published vertex whose ``k`` the reproduced curve
        has a value at (the variance explained by the top ``k`` vectors).
        Rows with ``measure`` ``"k80"`` / ``"k99"`` (``k`` blank): the number of
        vectors reaching 80 % / 99 %, reproduced and published (the count
        printed on Fig. 5 + 1), where both exist.
    """
    import pandas as pd

    curves = curve_frame(curves) if isinstance(curves, Mapping) else curves
    published = figures.explained_variance() if published is None else published
    points = curves[["layer", "curve", "k", "value"]].dropna(subset=["value"]).merge(
        published[["layer", "curve", "k", "value"]].rename(columns={"value": "published"}),
        on=["layer", "curve", "k"], how="inner").rename(columns={"value": "reproduced"})
    points.insert(2, "measure", "variance")
    paper = pd.DataFrame([{"layer": layer, "curve": curve, "measure": f"k{level}", "published": vectors(printed)}
                          for layer, found in EXPLAINED_VARIANCE_COUNTS.items() for curve, pair in found.items()
                          for level, printed in zip((80, 99), pair)])
    mine = counts.melt(id_vars=["layer", "curve"], value_vars=["k80", "k99"], var_name="measure",
                       value_name="reproduced").dropna(subset=["reproduced"])
    found = mine.merge(paper, on=["layer", "curve", "measure"], how="inner")
    out = pd.concat([points, found], ignore_index=True)
    out["reproduced"], out["published"] = out["reproduced"].astype(float), out["published"].astype(float)
    out["difference"] = out["reproduced"] - out["published"]
    out["k"] = out["k"].astype("Int64")
    rank = {key: i for i, key in enumerate(dict.fromkeys(zip(curves["layer"], curves["curve"])))}
    out["_rank"] = [rank.get(key, len(rank)) for key in zip(out["layer"], out["curve"])]
    out["_measure"] = out["measure"].map({"variance": 0, "k80": 1, "k99": 2})
    out = out.sort_values(["_rank", "_measure", "k"], kind="stable").drop(columns=["_rank", "_measure"])
    return out[["layer", "curve", "measure", "k", "reproduced", "published", "difference"]].reset_index(drop=True)


def ablation_vs_published(table, published=None):
    """Fig. 6: the reproduced sweep against the published curves, at the counts both have.

    Parameters
    ----------
    table : DataFrame
        ``ablation.csv`` (``layer, basis, order, n_ablated, top1``).
    published : DataFrame, optional
        :func:`helpers.reference.ablation` (the default).

    Returns
    -------
    DataFrame
        Columns ``layer, basis, order, n_ablated, top1, published_top1,
        difference`` (``top1 - published_top1``), in ``table``'s order: one row
        per reproduced count at which the published curve stores a vertex.
        The published curves lack the vertices their export dropped, so many
        reproduced counts have no row; none is interpolated.
    """
    published = figures.ablation() if published is None else published
    keys = ["layer", "basis", "order", "n_ablated"]
    mine = table[[*keys, "top1"]].copy()
    if len(mine) and not (mine["n_ablated"] == mine["n_ablated"].round()).all():
        raise ValueError("the ablation table has counts n_ablated that are not whole numbers: pass ablation.csv as "
                         "written by 05_ablation.")
    mine["n_ablated"] = mine["n_ablated"].astype("int64")
    theirs = published[[*keys, "top1"]].rename(columns={"top1": "published_top1"}).astype({"n_ablated": "int64"})
    out = mine.merge(theirs, on=keys, how="inner")
    out["difference"] = out["top1"] - out["published_top1"]
    return out.reset_index(drop=True)


def user_study_vs_published(table, published=None):
    """Fig. 7: the reproduced accuracies against the published ones, per observer, layer and basis.

    Parameters
    ----------
    table : DataFrame
        ``user_study_accuracy.csv`` (``observer, layer, basis, n, accuracy, sem``).
    published : DataFrame, optional
        :func:`helpers.reference.user_study` (the default).

    Returns
    -------
    DataFrame
        Columns ``observer, layer, basis, accuracy, sem, published_accuracy,
        published_sem, difference`` (``accuracy - published_accuracy``), in
        ``table``'s order, for the layers and bases both have.
    """
    published = figures.user_study() if published is None else published
    theirs = published[["layer", "basis", "accuracy", "sem"]].rename(
        columns={"accuracy": "published_accuracy", "sem": "published_sem"})
    out = table[["observer", "layer", "basis", "accuracy", "sem"]].merge(theirs, on=["layer", "basis"], how="inner")
    out["difference"] = out["accuracy"] - out["published_accuracy"]
    return out.reset_index(drop=True)


def summary(differences, name: str) -> str:
    """One line on a table of differences: how many points, the mean absolute difference, the largest.

    ``differences`` has a ``difference`` column (the tables of this module); ``name`` starts the line.
    """
    found = differences.dropna(subset=["difference"])
    if not len(found):
        return f"{name}: no point in common with the published values."
    worst = found.loc[found["difference"].abs().idxmax()]
    where = ", ".join(f"{c} = {worst[c]}" if c in ("k", "n_ablated") else str(worst[c])
                      for c in KEYS if c in found.columns and str(worst[c]) != "<NA>")
    return (f"{name}: {len(found):,} points compared, mean |difference| {found['difference'].abs().mean():.4f}, "
            f"largest {worst['difference']:+.4f} ({where}).")
