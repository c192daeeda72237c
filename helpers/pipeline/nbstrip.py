"""Git's clean filter for the notebooks: outputs never reach a commit, whatever saved the notebook.

``make setup`` registers it (``git config filter.notebook-outputs.clean``) and
``.gitattributes`` applies it to ``notebooks/*.ipynb``: what git stores of a
notebook saved from JupyterLab (outputs, execution counts, the language and
widget state Lab adds) is the notebook as committed — code, markdown, tags and
the kernelspec/jupytext metadata. The file on disk keeps its outputs.

    python -m helpers.pipeline.nbstrip < notebook.ipynb > clean.ipynb
"""
from __future__ import annotations

import sys

import nbformat

KEEP = ("kernelspec", "jupytext")
"""Notebook metadata kept (the rest — language_info, widgets, papermill — is run state)."""


def strip(nb):
    """The notebook without outputs, execution counts or run metadata (in place; returned)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP}
    return nb


def main() -> int:
    nb = nbformat.reads(sys.stdin.read(), as_version=4)
    sys.stdout.write(nbformat.writes(strip(nb)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
