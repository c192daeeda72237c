"""Reproduction package for "Neuron-based explanations of neural networks sacrifice
completeness and interpretability" (Dey et al., TMLR 2025).

Each step of the method lives in one module: ``sampling`` (activations),
``bases`` (PCA and neuron bases), ``plots`` (figures); ``config`` holds the
profiles, ``store`` the on-disk artifacts, ``run`` the papermill runner.
"""
__version__ = "0.1.0"
