"""08's row: :class:`Unit`, one explained unit of ``units.csv``, and what is read from a table of them.

:func:`units` lists a layer's units (their ids only); 08 fills in the formula
and the ablation (:mod:`helpers.explain.explanations`); :func:`write_units` and
:func:`read_units` store and load the rows; :func:`formulas`, :func:`describe`,
:func:`importance` and :func:`optimality` read them.

Memory: the rows (a few hundred bytes each).
"""
from __future__ import annotations

import csv
import dataclasses
import math
import typing

from ..pipeline import provenance, store

NAN = math.nan


def _table(default=dataclasses.MISSING):
    """A field that is also a column of the published ``compositional_explanations.csv`` (:data:`TABLE`)."""
    return dataclasses.field(default=default, metadata={"table": True})


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of a layer and its explanation: a row of ``units.csv`` (its fields are the columns, in order).

    ``basis, component, sign`` identify it in its layer: the basis, the vector's
    1-based rank, ``"+"`` or ``"-"`` (which end of a signed basis fires; always
    ``"+"`` otherwise). ``neuron``: the channel of a neuron unit (-1 for other
    bases). ``formula``/``iou``: the answer (beam or certified optimum, by
    ``formula_search``); ``primitive``/``iou_length1``: the best single concept;
    ``iou_max_length_k``: the best IoU with at most k concepts; ``formula_beam``/
    ``iou_beam`` and ``formula_optimal``/``iou_optimal`` (empty, NaN without the
    optimum); ``threshold``: where the unit fires; ``unit_pixels``: its mask's
    size; ``top1``: accuracy with the unit alone mean-ablated, beside
    ``top1_unablated``. Fields marked ``_table`` are :data:`TABLE`.
    """

    layer: str = _table()
    basis: str = _table()
    component: int = _table()
    sign: str = _table()
    neuron: int = -1
    formula: str = _table("")
    length: int = _table(0)
    iou: float = _table(NAN)
    primitive: str = ""
    iou_length1: float = _table(NAN)
    iou_max_length_1: float = NAN
    iou_max_length_2: float = NAN
    iou_max_length_3: float = NAN
    iou_max_length_4: float = NAN
    iou_max_length_5: float = NAN
    formula_beam: str = ""
    iou_beam: float = NAN
    formula_optimal: str = ""
    iou_optimal: float = NAN
    threshold: float = NAN
    unit_pixels: int = 0
    top1: float = NAN
    top1_unablated: float = NAN

    @property
    def id(self) -> tuple:
        """``(layer, basis, component, sign)``: what tells the unit from the others."""
        return self.layer, self.basis, self.component, self.sign


COLUMNS = tuple(f.name for f in dataclasses.fields(Unit))
"""The columns of ``units.csv``: the fields of :class:`Unit`."""

TABLE = tuple(f.name for f in dataclasses.fields(Unit) if f.metadata.get("table"))
"""The columns of ``compositional_explanations.csv``."""

LONGEST = sum(name.startswith("iou_max_length_") for name in COLUMNS)
"""The by-length curve runs to formulas of this many concepts (``iou_max_length_1`` … of :class:`Unit`)."""

_TYPES = typing.get_type_hints(Unit)


def units(layer: str, fitted: dict, n: int, all_neurons: bool = False) -> list[Unit]:
    """The units of one layer, ids only (the rest of each :class:`Unit` at its default).

    ``fitted``: ``{basis: fitted basis}`` of the layer (:func:`helpers.bases.layer_bases`);
    the top ``n`` vectors of each (every neuron with ``all_neurons``). A basis
    whose codes take both signs (PCA, ICA: :data:`helpers.bases.KINDS`) gives two
    units per vector, ``"+"`` then ``"-"``.
    """
    from ..bases.kinds import KINDS

    out = []
    for basis, b in fitted.items():
        K = len(b.components_)
        for j in range(K if basis == "neuron" and all_neurons else min(n, K)):
            for sign in ("+", "-") if KINDS[basis].signed else ("+",):
                out.append(Unit(layer, basis, j + 1, sign, int(b.order_[j]) if basis == "neuron" else -1))
    return out


def write_units(path, rows) -> None:
    """Write :class:`Unit` rows as ``units.csv`` (:data:`COLUMNS`), atomically."""
    store.write_csv(path, COLUMNS, ({k: getattr(r, k) for k in COLUMNS} for r in rows))


def read_units(path) -> list[Unit]:
    """The :class:`Unit` rows of a ``units.csv``, numbers parsed; its columns must be :data:`COLUMNS`."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        got = tuple(reader.fieldnames or ())
        if got != COLUMNS:
            missing, extra = [c for c in COLUMNS if c not in got], [c for c in got if c not in COLUMNS]
            raise ValueError(f"{path}: its columns are not those of a Unit (missing {missing}, unexpected {extra}"
                             f"{', or in another order' if not missing and not extra else ''}): it was written by "
                             "another version of 08; delete the compositional artifact and rerun 08 "
                             "(python -m helpers.run --only 08).")
        return [Unit(**{k: _TYPES[k](v) for k, v in r.items()}) for r in reader]


def formulas(p) -> dict:
    """``{(layer, basis, component): [(sign, formula, iou), ...]}`` from 08's artifact; ``{}`` unless current.

    For the explorer and the demo site: the formula beside a unit's grid.
    """
    try:
        state, _ = provenance.status(p, "compositional")
    except (OSError, ValueError):  # no concepts for this profile, or an upstream artifact missing
        return {}
    if state != "current":
        return {}
    out: dict = {}
    for r in read_units(p.artifact("compositional") / "units.csv"):
        out.setdefault((r.layer, r.basis, r.component), []).append((r.sign, r.formula, r.iou))
    return out


def describe(entries) -> str:
    """``"+ (garment AND top) AND NOT bright (IoU 0.21); − …"`` for one unit's entries of :func:`formulas`."""
    return "; ".join(f"{'' if len(entries) == 1 else sign + ' '}{formula or '(none)'} (IoU {iou:.2f})"
                     for sign, formula, iou in entries)


def importance(table):
    """Does interpretability track importance? Spearman ρ of IoU against the accuracy drop, per layer and basis.

    ``table``: a DataFrame of :class:`Unit` rows. A unit's drop is
    ``top1_unablated − top1`` when it alone is mean-ablated; a PC counts once,
    with the IoU of its better-explained sign.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    t = table.assign(top1_drop=table.top1_unablated - table.top1)
    per_unit = t.groupby(["layer", "basis", "component"], sort=False).agg(
        iou=("iou", "max"), top1_drop=("top1_drop", "first"))
    out = []
    for (layer, basis), g in per_unit.groupby(level=[0, 1], sort=False):
        x, y = g["iou"], g["top1_drop"]
        rho, pval = spearmanr(x, y) if len(g) > 2 and x.nunique() > 1 and y.nunique() > 1 \
            else (float("nan"), float("nan"))
        out.append({"layer": layer, "basis": basis, "n_units": len(g), "spearman_rho": float(rho),
                    "p_value": float(pval), "mean_iou": float(x.mean()), "mean_top1_drop": float(y.mean())})
    return pd.DataFrame(out)


def optimality(table):
    """Per layer and basis: how far the beam's formulas are from the certified optimum.

    ``table``: a DataFrame of :class:`Unit` rows made with ``formula_search="optimal"``.
    Columns ``layer, basis, n_units, suboptimal, suboptimal_share, mean_iou_left, max_iou_left``: a
    beam formula is suboptimal when its IoU is below the optimum's (by more than 1e-12).
    """
    t = table.assign(left=table.iou_optimal - table.iou_beam)
    t = t.assign(suboptimal=t.left > 1e-12)
    out = t.groupby(["layer", "basis"], sort=False).agg(
        n_units=("left", "size"), suboptimal=("suboptimal", "sum"), mean_iou_left=("left", "mean"),
        max_iou_left=("left", "max")).reset_index()
    out.insert(4, "suboptimal_share", out.suboptimal / out.n_units)
    return out
