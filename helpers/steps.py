"""The catalogue of the method's steps: importing it imports every step's module, and so declares every step
with :mod:`helpers.pipeline.provenance` (each module declares what it makes, in notebook order)."""
from .models import loading  # 01: the stand-in trained here (retrain=True)
from . import sampling  # 01: the sample
from .bases import fit  # 02: the bases
from .search import index  # 03: the index
from .grids import visualize  # 04: the grids
from .ablation import accuracy  # 05: the ablation sweep
from .study import stimuli  # 06: the study stimuli
from .study import machine  # 06: the machine scores
from .study import analysis  # 07: the study's tables and Fig. 7
from .explain import explanations  # 08: the compositional explanations

MODULES = (loading, sampling, fit, index, visualize, accuracy, stimuli, machine, analysis, explanations)
"""The modules that declare a step, in the order of the notebooks."""
