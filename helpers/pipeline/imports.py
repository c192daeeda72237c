"""The import graph of ``helpers``, read from the source with :mod:`ast`.

Every ``import`` counts, at the top of a module or inside a function. A statement names the modules it
reads: ``from .models.running import place`` reads ``models.running``; ``from . import bases`` reads the
package ``bases`` (its ``__init__``, and so whatever that imports). A module's :func:`closure` is every
module it reads, transitively: an artifact's code part is the digest of its step module's closure
(:func:`helpers.pipeline.keys.code`), and the layout test checks the graph for circles and upward imports.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # helpers/


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``helpers/models/running.py`` -> ``"models.running"``; a package's ``__init__`` is the package's name
    (``"__init__"`` for ``helpers`` itself)."""
    parts = Path(path).relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted name below helpers: path}`` for every module of the package."""
    return {module_name(p, package): p for p in sorted(Path(package).rglob("*.py"))}


def resolve(name: str, is_package: bool, node: ast.ImportFrom, known) -> list[str]:
    """The modules of ``helpers`` a ``from ... import`` statement in module ``name`` reads."""
    if node.level == 0:
        if not (node.module or "").startswith("helpers"):
            return []
        base = node.module.split(".")[1:]
    else:
        here = name.split(".") if name != "__init__" else []
        package = here if is_package else here[:-1]
        base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    out = []
    for alias in node.names:
        full = ".".join(base + [alias.name])
        out.append(full if full in known else ".".join(base) or "__init__")
    return out


def _imports(name: str, path: Path, known) -> set:
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            deps.update(resolve(name, path.name == "__init__.py", node, known))
        elif isinstance(node, ast.Import):
            deps.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("helpers."))
    return {d for d in deps if d != name and d in known}


def graph(package: Path = PACKAGE) -> dict[str, set]:
    """``{module: the modules it imports}`` (dotted names below ``helpers``)."""
    found = modules(package)
    return {name: _imports(name, path, found) for name, path in found.items()}


def stamp() -> tuple:
    """Name, size and modification time of every file of the package: what the caches here depend on."""
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(PACKAGE.rglob("*.py")))


@functools.lru_cache(maxsize=8)
def _graph(now: tuple) -> dict:
    return graph()


@functools.lru_cache(maxsize=256)
def _closure(module: str, skip: frozenset, now: tuple) -> tuple:
    edges = _graph(now)
    if module not in edges:
        raise ValueError(f"module={module!r} is not a module of helpers; they are {sorted(edges)}.")
    seen, todo = {module}, [module]
    while todo:
        for dep in edges[todo.pop()]:
            if dep not in seen and dep not in skip and not any(dep.startswith(s + ".") for s in skip):
                seen.add(dep)
                todo.append(dep)
    return tuple(sorted(seen))


def closure(module: str, skip=()) -> tuple:
    """Every module of ``helpers`` that ``module`` (dotted, e.g. ``"sampling"``) reads, itself included, sorted.

    ``skip``: modules (or packages: every module below them) not followed. Cached until a file of the
    package changes (its name, size or modification time).
    """
    return _closure(module, frozenset(skip), stamp())
