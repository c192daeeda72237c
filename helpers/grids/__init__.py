"""Steps 3–4: the grids of image patches that show a basis vector (Figs. 2–4, 16–20) and Fig. 12's toy."""
from .visualize import (Visualizer, grid_path, grid_png, grids_key, layer_grids, make_grids, patch_grid,
                        projection_range, saved_grids, toy_example, visualizer_for, write_grids)

__all__ = ["Visualizer", "grid_path", "grid_png", "grids_key", "layer_grids", "make_grids", "patch_grid",
           "projection_range", "saved_grids", "toy_example", "visualizer_for", "write_grids"]
