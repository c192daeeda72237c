"""Compositional explanations (Mu & Andreas 2020) of neurons and of basis vectors.

``formulas`` (logical formulas over concepts, unit masks), ``index`` (the concept index: counts of every
concept per image), ``beam`` (the reference beam search, ranked as the authors' code ranks), ``optimal``
(the certified optimum for short formulas), ``probe`` (the probe images and their concepts), ``maps`` (the
units' maps and masks), ``rows`` (08's row, :class:`Unit`, and what is read from a table of them) and
``explanations`` (08's pipeline: masks, formulas and ablation of every unit of every layer, examples).
"""
from .beam import Explanation, reference_score, search
from .explanations import ablate_units, examples, explain, explain_key, explain_units, make_explanations
from .formula import OPS, Formula, iou, threshold, unit_pixels, upsample
from .index import ConceptIndex
from .maps import unit_masks
from .optimal import Optimum, optimal
from .probe import concepts_source, formula_mask, probe
from .rows import (COLUMNS, LONGEST, TABLE, Unit, describe, formulas, importance, optimality, read_units, units,
                   write_units)

__all__ = ["Explanation", "reference_score", "search", "ablate_units", "examples", "explain", "explain_key", "make_explanations",
           "explain_units", "OPS", "Formula", "iou", "threshold", "unit_pixels", "upsample", "ConceptIndex",
           "unit_masks", "Optimum", "optimal", "concepts_source", "formula_mask", "probe", "COLUMNS", "LONGEST",
           "TABLE", "Unit", "describe", "formulas", "importance", "optimality", "read_units", "units",
           "write_units"]
