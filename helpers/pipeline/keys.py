"""Artifact keys: what an artifact is made from, and how two keys differ.

A key has three parts: ``params`` (the settings that shape the artifact),
``inputs`` (which images, the model id, the content hash of every upstream
artifact) and ``code`` (a digest of each module that computes it: its syntax
tree without docstrings, so comments, layout and documentation do not count;
which modules, :func:`helpers.pipeline.provenance.code` reads from the imports).
:func:`differences` turns two keys into readable phrases; an artifact made for
more layers than asked for serves the fewer (layers are independent).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # helpers/


@functools.lru_cache(maxsize=64)
def _module_digest(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of a module's syntax tree without docstrings (comments and layout do not count)."""
    tree = ast.parse(Path(path).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return "sha256:" + hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def code_digest(modules) -> dict:
    """``{"helpers/<path>.py": digest}`` for the given modules of ``helpers`` (dotted: ``"bases.pca"``)."""
    out = {}
    for name in modules:
        base = PACKAGE / name.replace(".", "/")
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        st = path.stat()
        out[f"helpers/{path.relative_to(PACKAGE).as_posix()}"] = _module_digest(str(path), st.st_mtime_ns, st.st_size)
    return out


def key(params: dict, inputs: dict | None = None, code=()) -> dict:
    """An artifact's key: ``params`` (settings), ``inputs`` (images, model, upstream hashes), ``code`` (the
    digests of the modules named, :func:`code_digest`)."""
    return {"params": params, "inputs": inputs or {}, "code": code_digest(code)}


def _plain(value):
    return json.loads(json.dumps(value))


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v):
    text = repr(v)
    if isinstance(v, str) and v.startswith("sha256:") and len(v) > 19:
        text = repr(v[:19] + "…")
    return text if len(text) < 90 else text[:87] + "…"


def _covered(name: str, found, asked) -> bool:
    """Whether ``found`` serves ``asked``: more layers than asked are fine (layers are independent)."""
    if name == "params.layers" and isinstance(found, list) and isinstance(asked, list):
        return set(asked) <= set(found)
    return found == asked


def differences(found: dict, expected: dict, exact: bool = False) -> list[str]:
    """What differs between a recorded key and the expected one, as readable phrases."""
    if "code" not in found:
        return ["it was made by an older version of this package, which recorded no provenance"]
    out = []
    for section in ("params", "inputs", "code"):
        a, b = _flat(_plain(found.get(section)), f"{section}."), _flat(_plain(expected.get(section)), f"{section}.")
        for name in sorted(set(a) | set(b)):
            if a.get(name) == b.get(name) or (not exact and _covered(name, a.get(name), b.get(name))):
                continue
            label = name.split(".", 1)[1]
            if section == "code":
                out.append(f"other code ({label} has changed since)")
            elif name not in a:
                out.append(f"{label} not recorded (now {_short(b[name])})")
            elif name not in b:
                out.append(f"{label}={_short(a[name])} (no longer used)")
            else:
                out.append(f"{label}={_short(a[name])} (now {_short(b[name])})")
    return out
