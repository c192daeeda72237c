"""The catalogue of the method's steps: importing it registers every artifact's key with
:mod:`helpers.pipeline.provenance` (each step's module registers what it makes, in notebook order)."""
from .models import loading  # 01: the stand-in trained here (retrain=True)
from . import sampling  # 01: the sample
from .bases import fit  # 02: the bases
from . import search  # 03: the index
from .grids import visualize  # 04: the grids
from .ablation import accuracy  # 05: the ablation sweep
from .study import stimuli  # 06: the study stimuli
from .study import machine  # 06: the machine scores
from .explain import explanations  # 08: the compositional explanations

STEPS = (loading, sampling, fit, search, visualize, accuracy, stimuli, machine, explanations)
"""The modules that register an artifact, in the order of the notebooks."""
