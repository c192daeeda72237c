"""The demo site: every model's figures and grids of a profile as a static site (``build``; ``assets/``)."""
from .build import export, main, models_found

__all__ = ["export", "main", "models_found"]
