"""The infrastructure under every step: settings and profiles, artifacts on disk (``store``, ``keys``,
``locks``), what each artifact is made from (``provenance``), the runner (``run``) and ``verify``.

It imports no step of the method: each step declares itself with :func:`.provenance.declare`.
"""
from . import keys, locks, provenance, store
from .settings import PAPER_LAYERS, PROFILES, ROOT, SETTINGS, Profile, given, load_profile, slug

__all__ = ["keys", "locks", "provenance", "store", "PAPER_LAYERS", "PROFILES", "ROOT", "SETTINGS", "Profile",
           "given", "load_profile", "slug"]
