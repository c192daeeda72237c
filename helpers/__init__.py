"""Reproduction package for "Neuron-based explanations of neural networks sacrifice
completeness and interpretability" (Dey et al., TMLR 2025).

Each step of the method lives in one module: ``sampling`` (activations),
``bases`` (PCA and neuron bases), ``receptive`` and ``search`` (patches and
their nearest neighbours), ``visualize`` (grids), ``ablation``, ``study``
(user-study stimuli, trial lists, response log), ``study_app`` (the
participants' app), ``observer`` (the machine observer), ``analysis`` (Fig. 7
statistics), ``plots`` (figures); ``config`` holds the profiles, ``store`` the
on-disk artifacts, ``run`` the papermill runner.
"""
__version__ = "0.1.0"
