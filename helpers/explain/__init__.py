"""Compositional explanations (Mu & Andreas 2020) of neurons and of basis vectors.

``formulas`` (logical formulas over concepts, unit masks), ``index`` (the concept index: counts of every
concept per image), ``beam`` (the reference beam search, ranked as the authors' code ranks), ``optimal``
(the certified optimum for short formulas), ``probe`` (the probe images and their concepts) and
``explanations`` (08's pipeline: every unit of every layer, importance, examples).
"""
from .beam import Explanation, reference_score, search
from .explanations import (LONGEST, TABLE, describe, examples, explain, explain_key, formulas, importance,
                           optimality, read_units, units)
from .formula import OPS, Formula, iou, threshold, unit_pixels, upsample
from .index import ConceptIndex
from .optimal import Optimum, optimal
from .probe import concepts_source, formula_mask, probe

__all__ = ["Explanation", "reference_score", "search", "LONGEST", "TABLE", "describe", "examples", "explain",
           "explain_key", "formulas", "importance", "optimality", "read_units", "units", "OPS", "Formula", "iou",
           "threshold", "unit_pixels", "upsample", "ConceptIndex", "Optimum", "optimal", "concepts_source",
           "formula_mask", "probe"]
