"""The git clean filter: a notebook saved with outputs is committed without them."""
import shutil
import subprocess
import sys

import nbformat

from helpers.pipeline.nbstrip import strip
from helpers.pipeline.settings import ROOT


def test_committed_notebooks_pass_the_filter_unchanged():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        assert nbformat.writes(strip(nbformat.reads(text, as_version=4))) + "\n" == text, path.name


def test_a_notebook_saved_with_outputs_is_committed_without_them(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    source = ROOT / "notebooks" / "02_pca.ipynb"
    nb = nbformat.read(source, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="a result\n")]
    code.execution_count = 3
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, repo / "notebooks" / "02_pca.ipynb")

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "filter.notebook-outputs.clean", f"{sys.executable} -m helpers.pipeline.nbstrip")
    git("add", "notebooks/02_pca.ipynb")
    stored = git("show", ":notebooks/02_pca.ipynb")
    assert stored == source.read_text()  # exactly the committed, clean notebook
    assert "a result" in (repo / "notebooks" / "02_pca.ipynb").read_text()  # the file keeps its outputs
