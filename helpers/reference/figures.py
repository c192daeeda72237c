"""The published values of Figs. 5, 6 and 7, read from the CSVs shipped beside this module (see README.md).

Each loader returns a new tidy DataFrame with this package's names (layers ``conv1`` … ``fc3``, curves
``<basis>_<pre|post>_relu``, bases ``pca`` / ``neuron``); the files are parsed once per process.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path

HERE = Path(__file__).resolve().parent

FILES = {"fig5": "fig5_explained_variance.csv", "fig6": "fig6_ablation.csv", "fig7": "fig7_user_study.csv"}
"""The shipped files, by figure."""

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3")
"""AlexNet's layers in the paper's order (the order of every loaded table)."""

CURVES = {"PCA pre-ReLU": "pca_pre_relu", "PCA post-ReLU": "pca_post_relu", "Neuron pre-ReLU": "neuron_pre_relu"}
"""Fig. 5's legend labels → this package's curve names."""

BASES = {"PCA": "pca", "neuron": "neuron"}
"""Figs. 6 and 7's basis labels → this package's basis names."""

ORDERS = ("descending", "ascending")

COLUMNS = {"fig5": ("layer", "curve", "k", "cumulative_explained_variance", "x_plotted"),
           "fig6": ("layer", "basis", "order", "n_ablated", "top1"),
           "fig7": ("layer", "basis", "accuracy", "sem", "correct_of_352")}
"""The columns of each shipped file."""

TRIALS = 352
"""Trials per layer and basis in the paper's study: 22 participants × 16."""


def path(figure: str) -> Path:
    """The shipped CSV of ``figure`` (``"fig5"``, ``"fig6"`` or ``"fig7"``)."""
    if figure not in FILES:
        raise ValueError(f"figure={figure!r}: the published values are of {', '.join(FILES)}; pass one of them.")
    found = HERE / FILES[figure]
    if not found.is_file():
        raise FileNotFoundError(f"{found} is missing: the package was installed without its data files. Reinstall it "
                                "from the repository (pip install -e .), whose pyproject.toml lists them as "
                                "package data.")
    return found


def read_rows(figure: str) -> list[dict]:
    """The rows of ``figure``'s CSV as dicts of strings (standard library only, for import-time constants)."""
    with path(figure).open(newline="") as f:
        return list(csv.DictReader(f))


def _renamed(values, names: dict, column: str, figure: str):
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{path(figure)}: unknown {column} {unknown}; expected {sorted(names)}. The file was "
                         "edited or replaced: restore it from the repository.")
    return values.map(names)


def _sorted(frame, keys: list, orders: dict, figure: str):
    """``frame`` sorted by ``keys``, the columns of ``orders`` in the given orders (and only their values)."""
    import pandas as pd

    frame = frame.copy()
    for column, order in orders.items():
        _renamed(frame[column], {value: value for value in order}, column, figure)
        frame[column] = pd.Categorical(frame[column], categories=list(order), ordered=True)
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    return frame.astype({column: str for column in orders})


@functools.lru_cache(maxsize=None)
def _load(figure: str):
    import pandas as pd

    raw = pd.read_csv(path(figure))
    if tuple(raw.columns) != COLUMNS[figure]:
        raise ValueError(f"{path(figure)} has the columns {list(raw.columns)}, not {list(COLUMNS[figure])}: the file "
                         "was edited or replaced; restore it from the repository.")
    if figure == "fig5":
        frame = pd.DataFrame({"layer": raw["layer"], "curve": _renamed(raw["curve"], CURVES, "curve", figure),
                              "k": raw["x_plotted"].astype("int64") + 1,
                              "value": raw["cumulative_explained_variance"].astype(float)})
        return _sorted(frame, ["layer", "curve", "k"], {"layer": LAYERS, "curve": CURVES.values()}, figure)
    if figure == "fig6":
        frame = pd.DataFrame({"layer": raw["layer"], "basis": _renamed(raw["basis"], BASES, "basis", figure),
                              "order": raw["order"], "n_ablated": raw["n_ablated"].astype("int64"),
                              "top1": raw["top1"].astype(float)})
        return _sorted(frame, ["layer", "basis", "order", "n_ablated"],
                       {"layer": LAYERS, "basis": BASES.values(), "order": ORDERS}, figure)
    correct = raw["correct_of_352"].astype("int64")
    frame = pd.DataFrame({"layer": raw["layer"], "basis": _renamed(raw["basis"], BASES, "basis", figure),
                          "accuracy": correct / TRIALS, "sem": raw["sem"].astype(float), "correct": correct,
                          "trials": TRIALS})
    return _sorted(frame, ["layer", "basis"], {"layer": LAYERS, "basis": BASES.values()}, figure)


def explained_variance():
    """Fig. 5 as published: the cumulative explained-variance ratio of the top k vectors.

    Returns
    -------
    DataFrame
        Columns ``layer, curve, k, value``: ``curve`` one of ``pca_pre_relu``,
        ``pca_post_relu``, ``neuron_pre_relu`` (fc3 has no post-ReLU curve);
        ``k`` the number of basis vectors (the figure's x position + 1, its x
        axis counting from 0); ``value`` the ratio. 852 rows: the vertices the
        figure stores, not every k.
    """
    return _load("fig5").copy()


def ablation():
    """Fig. 6 as published: top-1 accuracy on ImageNet val after ablating basis vectors.

    Returns
    -------
    DataFrame
        Columns ``layer, basis, order, n_ablated, top1`` (as ``ablation.csv``):
        ``basis`` ``pca`` or ``neuron``, ``order`` ``descending`` or
        ``ascending``. 4,271 rows: only the vertices the figure's export kept,
        so most curves lack many counts (see README.md).
    """
    return _load("fig6").copy()


def user_study():
    """Fig. 7 as published: the study's accuracy per layer and basis, with its standard error.

    Returns
    -------
    DataFrame
        Columns ``layer, basis, accuracy, sem, correct, trials``: 16 rows,
        ``accuracy = correct / trials`` exactly (``trials`` = 352, 22
        participants × 16), ``sem`` half the height of the figure's band.
    """
    return _load("fig7").copy()
