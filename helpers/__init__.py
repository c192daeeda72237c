"""Reproduction package for "Neuron-based explanations of neural networks sacrifice
completeness and interpretability" (Dey et al., TMLR 2025).

One subpackage or module per step of the method, in the order it runs: ``images``
(datasets, the batch feeder, concepts), ``models`` (registry, shipped stand-ins,
families and hook sites, receptive fields), ``sampling`` (activations), ``bases``
(PCA, neurons, ICA, NMF, SAE), ``search`` (the patch index), ``grids``, ``ablation``
(Fig. 6), ``study`` (stimuli, app, observers, Fig. 7), ``explain`` (compositional
explanations), ``explorer``, ``plots`` and ``reference``; under them ``pipeline``
(settings, artifacts, provenance, kernels); above them ``steps`` (the catalogue
that imports every step's declaration), ``run`` (the papermill runner), ``verify`` and
``site``. Imports run one way, down that list (``tests/test_layout.py``).
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
