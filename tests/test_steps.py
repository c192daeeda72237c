"""Each step declared once: its key computed by one function, its code read from its imports."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers.steps  # noqa: F401  declares every step
from helpers.pipeline import imports, keys, load_profile, provenance, store

ROOT = Path(__file__).resolve().parent.parent

CODE_PARTS = """
import json, sys
import helpers.steps
from helpers.pipeline import keys, provenance
print(json.dumps({a: keys.code_digest(provenance.code(provenance.producer(a).module)) for a in provenance.artifacts()}))
"""


def _code_parts(root: Path) -> dict:
    """``{artifact: code part of its key}`` as the package at ``root`` computes it (a fresh process)."""
    env = {k: v for k, v in os.environ.items() if k != "HELPERS_ROOT"}
    done = subprocess.run([sys.executable, "-c", CODE_PARTS], cwd=root, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _edited_copy(tmp_path, module: str, old: str, new: str) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "helpers", root / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "helpers" / module
    text = path.read_text()
    assert old in text, f"{module} no longer holds {old!r}: pick another line for this test"
    path.write_text(text.replace(old, new, 1))
    return root


@pytest.fixture(scope="module")
def current() -> dict:
    return _code_parts(ROOT)


def test_a_change_deep_in_an_import_closure_makes_exactly_the_steps_that_run_it_stale(tmp_path, current, copy):
    """``models/running.py`` (device placement, memory format, precision) is imported by 01's sample and 05's
    sweep, not by 02's bases: edit a function body there, and the recorded keys of the smoke run's sample,
    ablation (and the stand-in trained here) name it as other code, the bases' do not."""
    edited = _code_parts(_edited_copy(tmp_path, "models/running.py", "def get_device(device=None)",
                                      "def get_device(device=None, _unused=None)"))
    changed = {a for a in current if edited[a] != current[a]}
    assert {"model", "sample", "ablation"} <= changed and "bases" not in changed
    for artifact in changed:
        assert edited[artifact].keys() == current[artifact].keys()
        assert [m for m in current[artifact] if edited[artifact][m] != current[artifact][m]] == \
            ["helpers/models/running.py"]
    p = load_profile("smoke", **copy.params)  # what the smoke run recorded is what the code here computes
    for artifact in ("model", "sample", "bases", "ablation"):
        recorded = store.read_meta(p.artifact(artifact))["code"]
        assert recorded == current[artifact]
        assert (keys.differences({**store.read_meta(p.artifact(artifact)), "code": recorded},
                                 {**provenance.expected(p, artifact), "code": edited[artifact]}) != []) \
            == (artifact in changed)


def test_a_docstring_or_comment_changes_no_code_part(tmp_path, current):
    root = _edited_copy(tmp_path, "models/running.py", '"""', '"""Reworded. ')
    path = root / "helpers" / "models" / "running.py"
    path.write_text(path.read_text() + "\n# a comment at the end\n")
    assert _code_parts(root) == current


def test_the_code_part_is_the_import_closure_without_pipeline_and_the_upstream_steps():
    closure = provenance.code("bases.fit")
    assert "bases.pca" in closure and "bases.sae" in closure  # what it computes with
    assert "sampling" not in closure  # the sample enters the key by its content hash
    assert not [m for m in closure if m.startswith("pipeline")]
    assert "models.running" in provenance.code("sampling") and "models.running" in provenance.code("ablation.accuracy")
    assert "ablation.accuracy" in provenance.code("explain.explanations")  # 08 runs the sweep's code itself


def test_every_module_a_step_imports_at_run_time_is_in_its_import_graph():
    """The graph read with ast against Python's own: every ``helpers`` module importing a step's module loads
    is reachable in the graph from it (or is a package it sits in)."""
    code = ("import sys, json, helpers.sampling; "
            "print(json.dumps(sorted(m[8:] for m in sys.modules if m.startswith('helpers.'))))")
    env = {k: v for k, v in os.environ.items() if k != "HELPERS_ROOT"}
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                       env=env, check=True).stdout)
    reachable = set(imports.closure("sampling"))
    for name in list(reachable):
        reachable |= set(imports.closure(name))
    packages = {m for m in loaded if (ROOT / "helpers" / m.replace(".", "/") / "__init__.py").exists()}
    inside = {m for p in packages for m in imports.closure(p)}
    assert set(loaded) - packages - inside <= reachable


def _calls_provenance_key(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "key"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "provenance")


def test_each_artifact_key_is_built_by_one_function_the_one_its_step_declares():
    """``provenance.key`` (code from the imports) is called by the declared key functions only, and each rank
    function checks its rank against that same function."""
    declared = {(s.key.__module__.split(".", 1)[1], s.key.__name__) for s in provenance._DECLARED.values()
                if s.key is not None}
    builders = set()
    for name, path in imports.modules().items():
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            if any(_calls_provenance_key(n) for n in ast.walk(fn)):
                builders.add((name, fn.name))
    assert builders == declared
    for step in (s for s in provenance._DECLARED.values() if s.rank is not None):
        source = ast.parse(Path(sys.modules[step.rank.__module__].__file__).read_text())
        rank = next(n for n in ast.walk(source) if isinstance(n, ast.FunctionDef) and n.name == step.rank.__name__)
        called = {n.func.id for n in ast.walk(rank) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert step.key.__name__ in called, f"{step.rank.__name__} does not check its key with {step.key.__name__}"


@pytest.mark.parametrize("artifact", ["model", "sample", "bases", "index", "grids", "ablation", "stimuli",
                                      "machine", "compositional"])
def test_the_driver_recorded_the_key_provenance_expects(copy, artifact):
    """What each step's driver wrote on the smoke run is, exactly, the key its one key function gives now."""
    p = load_profile("smoke", **copy.params)
    meta = store.read_meta(p.artifact(artifact))
    assert keys.differences(meta, provenance.expected(p, artifact), exact=True) == []


def test_the_graph_is_declared_once_and_the_runner_reads_it():
    nbs = provenance.notebooks()
    assert list(nbs) == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert nbs["01"].makes == ("model", "sample") and nbs["06"].makes == ("stimuli", "machine")
    assert nbs["07"].makes == () and set(nbs["07"].reads) == {"stimuli", "machine"}
    assert provenance.upstream(load_profile("smoke"), "index") == ("model", "bases")
    assert provenance.upstream(load_profile("smoke", index_kind="ivf"), "index") == ("model", "bases", "sample")
    for number, nb in nbs.items():
        assert nb.notebook.startswith(number) and (ROOT / "notebooks" / f"{nb.notebook}.py").exists()
        for artifact in nb.makes:
            assert provenance.producer(artifact).notebook == nb.notebook
