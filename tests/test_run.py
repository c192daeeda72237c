import nbformat
import pytest

from helpers import run


def test_parse_parameters_reads_literals_and_strings():
    assert run.parse_parameters(["seed=1", "layers=conv1,fc1", "device=None", "n_sample=[1, 2]"]) == {
        "seed": 1, "layers": "conv1,fc1", "device": None, "n_sample": [1, 2]}
    with pytest.raises(ValueError, match="not key=value"):
        run.parse_parameters(["seed"])


def test_only_selects_by_number_or_name_and_rejects_unknown():
    names = [nb.stem for nb in run.find_notebooks(["1", "02_pca"])]
    assert names == ["01_sample", "02_pca"]
    with pytest.raises(ValueError, match=r"--only \['99'\]: no such notebook"):
        run.find_notebooks(["99"])


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "quick"\ndata_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_failure_names_the_executed_notebook_with_the_traceback(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_ok.ipynb", "x = 1")
    _notebook(folder / "02_bad.ipynb", "raise ValueError('boom')")
    params = {"data_dir": str(tmp_path / "data")}
    with pytest.raises(RuntimeError) as e:
        run.run("smoke", parameters=params, folder=folder)
    executed = tmp_path / "data" / "notebooks" / "02_bad.ipynb"
    assert str(executed) in str(e.value) and "ValueError: boom" in str(e.value)
    assert "boom" in executed.read_text()
    assert (tmp_path / "data" / "notebooks" / "01_ok.ipynb").exists()


def test_unknown_parameter_and_profile_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"-p \['sede'\]: not a parameter"):
        run.run("smoke", only=["01"], parameters={"sede": 1, "data_dir": str(tmp_path)})
    assert run.main(["--profile", "nope", "--only", "01"]) == 1
