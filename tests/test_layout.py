"""The package's shape: imports run one way down the method, no circle, small modules.

The import graph is built from the source with :mod:`ast` (every ``import``, at the top of a module or
inside a function), so a circle cannot come back unnoticed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.pipeline import imports


PACKAGE = Path(__file__).resolve().parent.parent / "helpers"

ORDER = ("pipeline", "images", "text", "models", "sampling", "bases", "search", "grids", "ablation", "study", "explain",
         "explorer", "reference", "published", "plots", "steps", "estimate", "run", "verify", "controls", "site")
"""The layers, first to last: a module may import its own layer and those before it. ``steps`` (the
catalogue that registers every artifact), ``run`` and ``verify`` plan across every step, so they sit above
them; ``controls`` runs every step for the control networks; ``site`` publishes what they made."""

UPWARD = {("pipeline.settings", "models")}
"""The imports allowed to run up, and why: a profile's default layers are its model's own, and only
``models`` knows them (imported when a profile leaves ``layers`` unset)."""

MAX_LINES = 400


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return imports.modules(package)


def graph(package: Path = PACKAGE) -> dict[str, set]:
    """``{module: modules it imports}`` (dotted names below ``helpers``): the graph provenance reads code from."""
    return imports.graph(package)


def cycles(edges: dict[str, set]) -> list[list[str]]:
    """Every elementary circle found by depth-first search (each reported once, from its smallest name)."""
    out, seen = [], set()

    def walk(start, node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                cyc = path[:]
                key = tuple(sorted(cyc))
                if key not in seen:
                    seen.add(key)
                    out.append(cyc + [start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return out


def layer(name: str) -> int:
    if name == "__init__":
        return -1  # the package's root: its version and the checkout check, under everything
    top = name.split(".")[0]
    return ORDER.index(top) if top in ORDER else len(ORDER)


def upward(edges: dict[str, set]) -> set:
    """Imports from a layer into a later one: ``{(module, imported layer)}``."""
    return {(a, b.split(".")[0]) for a, deps in edges.items() for b in deps
            if a != "__init__" and layer(b) > layer(a)}


def test_every_module_has_a_layer():
    assert {n.split(".")[0] for n in modules()} - {"__init__"} <= set(ORDER)


def test_no_import_circle():
    assert cycles(graph()) == []


def test_imports_run_down_the_method():
    assert upward(graph()) == UPWARD


def test_no_module_over_400_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_the_checks_can_fail(tmp_path):
    """A circle, an upward import and a relative import resolve as they should."""
    pkg = tmp_path / "helpers"
    (pkg / "pipeline").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline" / "__init__.py").write_text("from .store import x\n")
    (pkg / "pipeline" / "store.py").write_text("def f():\n    from ..sampling import y\n")
    (pkg / "sampling.py").write_text("from .pipeline import store\n")
    edges = graph(pkg)
    assert edges["pipeline.store"] == {"sampling"} and edges["sampling"] == {"pipeline.store"}
    assert cycles(edges) == [["pipeline.store", "sampling", "pipeline.store"]]
    assert upward(edges) == {("pipeline.store", "sampling")}


def test_every_module_is_in_the_repository():
    """An ignore pattern must not hide a module (a top-level ``site/`` pattern once hid ``helpers/site/``)."""
    import subprocess

    root = PACKAGE.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "helpers", "tests"],
                             cwd=root, capture_output=True, text=True, check=True).stdout.split()
    assert [f for f in ignored if f.endswith(".py") or f.endswith((".pt", ".json", ".css", ".js"))] == []
