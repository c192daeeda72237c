"""Fig. 6: accuracy when basis vectors are ablated. ``removal`` (what removing vectors does to a layer's
output, one form per kind of basis), ``accuracy`` (the sweep: accuracy at every count of every layer, batched)."""
from .removal import Removal, ablate, stack_rows
from .accuracy import (ablation_key, accuracies, count_grid, layer_counts, make_ablation, read_rows, settings, sweep,
                       sweep_layer)

__all__ = ["Removal", "ablate", "stack_rows", "ablation_key", "accuracies", "count_grid", "layer_counts",
           "make_ablation", "read_rows", "settings", "sweep", "sweep_layer"]
