"""Which networks exist and how they are read.

``registry`` (built-in stand-ins, ``torchvision:<name>``, ``module:callable``), ``shipped`` (the stand-ins'
weights that ship with the package), ``standins`` and ``training``, ``loading`` (a profile's model, ready),
``inputs`` (its images, preprocessed as it expects), ``running`` (devices, memory format, accuracy),
``families`` and ``sites`` (each architecture family describes its layers and hook sites once), ``receptive``.
"""
from .families import FAMILIES, Family, family_of, resolve
from .inputs import check_split, load_dataset, selection
from .loading import check, load_model, load_standin, model_id, trained_id
from .receptive import receptive_fields
from .registry import (MODELS, Spec, architecture, builder, default_layers, is_trained_here, load_torchvision,
                       preprocessing, spec, weights_id)
from .running import correct_count, evaluate, get_device, memory_format, place, state_hash
from .sites import Site, split

__all__ = ["FAMILIES", "Family", "family_of", "resolve", "check_split", "load_dataset", "selection", "check",
           "load_model", "load_standin", "model_id", "trained_id", "receptive_fields", "MODELS", "Spec",
           "architecture", "builder", "default_layers", "is_trained_here", "load_torchvision", "preprocessing",
           "spec", "weights_id", "correct_count", "evaluate", "get_device", "memory_format", "place", "state_hash",
           "Site", "split", "sites"]
