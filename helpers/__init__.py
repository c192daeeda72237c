"""Reproduction package for "Neuron-based explanations of neural networks sacrifice
completeness and interpretability" (Dey et al., TMLR 2025).

Each step of the method lives in one module: ``sampling`` (activations),
``bases`` (PCA and neuron bases), ``receptive`` and ``search`` (patches and
their nearest neighbours), ``visualize`` (grids), ``ablation``, ``study``
(user-study stimuli, trial lists, response log), ``study_app`` (the
participants' app), ``observer`` (the machine observer), ``analysis`` (Fig. 7
statistics), ``plots`` (figures). Around them: ``config`` (the profiles and
every setting's rules), ``data`` and ``batches`` (images), ``models`` and
``training`` (networks), ``store``, ``keys`` and ``locks`` (artifacts on disk,
what made them, one writer at a time), ``provenance`` (what each artifact is
made from), ``run`` (the papermill runner) and ``verify`` (checking artifacts).
"""
import os as _os
from pathlib import Path as _Path

__version__ = "0.1.0"

_runner_root = _os.environ.get("HELPERS_ROOT")
if _runner_root and _Path(_runner_root).resolve() != _Path(__file__).resolve().parent.parent:
    raise ImportError(
        f"this process imported helpers from {_Path(__file__).resolve().parent}, but the runner that started "
        f"it runs the checkout {_runner_root}: its notebooks would use other code and write elsewhere. Put "
        f"{_runner_root} first on PYTHONPATH (the runner does), or reinstall the package from that checkout "
        "(pip install -e .).")
