"""Settings reach a notebook's code one way, explicitly: checked from the source, without a kernel.

Each notebook's parameters cell lists the settings its own steps declare (and may list more it reads); the
cell's names are handed to :func:`helpers.pipeline.given` by name, nothing else; a setting that keys an
artifact the notebook reads but is not in its cell is *inherited* (it arrives in ``settings``), and
``docs/notebooks.md``'s table says which, as the cells and declarations hold them.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import helpers.steps  # noqa: F401  declares every step
from helpers.pipeline import SETTINGS, provenance

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {nb.notebook: ROOT / "notebooks" / f"{nb.notebook}.py" for nb in provenance.notebooks().values()}
WHERE = ("data_dir", "figures_dir")
"""Where files go: every cell lists them."""


def cell(path: Path) -> list[str]:
    text = path.read_text()
    found = re.search(r'# %% tags=\["parameters"\]\n(.*?)\n# %%', text, re.S)
    assert found, f"{path.name} has no parameters cell"
    tree = ast.parse(found.group(1))
    assert all(isinstance(n, ast.Assign) and isinstance(n.value, (ast.Constant, ast.Dict)) for n in tree.body), \
        f"{path.name}'s parameters cell holds something other than literals"
    return [n.targets[0].id for n in tree.body]


def given_call(path: Path) -> ast.Call:
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "given"]
    assert len(calls) == 1, f"{path.name} calls pipeline.given {len(calls)} times"
    return calls[0]


def settings_read(tree) -> set:
    """Every ``p.<setting>`` read in ``tree``."""
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "p" and n.attr in SETTINGS}


def own(notebook: str) -> set:
    return {s for step in provenance._DECLARED.values() if step.notebook == notebook for s in step.settings + step.uses}


def inherited(notebook: str) -> set:
    """The settings of every step upstream of the artifacts ``notebook`` reads, not in its cell."""
    nb = provenance.notebooks()[notebook[:2]]
    seen, todo, out = set(), list(nb.reads), set()
    while todo:
        artifact = todo.pop()
        if artifact in seen:
            continue
        seen.add(artifact)
        step = provenance.producer(artifact)
        out |= set(step.settings)
        todo += list(step.reads)
    return out - set(cell(NOTEBOOKS[notebook])) - set(WHERE)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_given_takes_the_cell_by_name_and_nothing_else(notebook):
    names = cell(NOTEBOOKS[notebook])
    call = given_call(NOTEBOOKS[notebook])
    assert [a.id for a in call.args] == ["profile", "settings"]
    assert [(k.arg, k.value.id) for k in call.keywords] == [(n, n) for n in names if n not in ("profile", "settings")]
    assert names[0] == "profile" and names[-1] == "settings" and set(WHERE) <= set(names)
    assert set(names) - {"profile", "settings"} <= set(SETTINGS)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_a_cell_lists_its_steps_settings_and_its_code_reads_no_other(notebook):
    names = set(cell(NOTEBOOKS[notebook]))
    assert own(notebook) <= names, f"{notebook}'s cell lacks its steps' settings {sorted(own(notebook) - names)}"
    read = settings_read(ast.parse(NOTEBOOKS[notebook].read_text()))
    assert read <= names | inherited(notebook), f"{notebook} reads {sorted(read - names - inherited(notebook))}"


@pytest.mark.parametrize("artifact", sorted({s.artifact for s in provenance._DECLARED.values() if s.artifact}))
def test_a_key_function_reads_only_the_settings_its_step_declares_or_inherits(artifact):
    step = provenance.producer(artifact)
    source = ast.parse(Path(helpers.steps.__file__).parent.joinpath(*step.key.__module__.split(".")[1:])
                       .with_suffix(".py").read_text())
    fn = next(n for n in ast.walk(source) if isinstance(n, ast.FunctionDef) and n.name == step.key.__name__)
    read = settings_read(fn)
    upstream = {s for a in step.reads for s in provenance.producer(a).settings}
    assert read <= set(step.settings) | upstream, f"{step.key.__name__} reads {sorted(read - set(step.settings))}"
    assert not set(step.uses) & read - upstream, f"{step.key.__name__} reads settings it declares as not keying it"


def docs_table() -> dict:
    text = (ROOT / "docs" / "notebooks.md").read_text()
    rows = re.findall(r"^\| `(\d\d_\w+)` \| `([^`]*)` \| `?([^`|]*)`? \|$", text, re.M)
    return {nb: (cells.split(), inherits.split()) for nb, cells, inherits in rows}


def test_the_docs_table_is_what_the_cells_hold():
    table = docs_table()
    assert sorted(table) == sorted(NOTEBOOKS)
    for notebook, (cells, inherits) in table.items():
        assert cells == [n for n in cell(NOTEBOOKS[notebook]) if n not in ("profile", "settings", *WHERE)], notebook
        assert sorted(i for i in inherits if i != "—") == sorted(inherited(notebook)), notebook
