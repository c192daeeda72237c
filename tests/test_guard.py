"""The session guard of tests/conftest.py: a pytest session that adds, removes or changes a file under the
watched data/ or figures/ exits non-zero and names what changed; one that leaves them alone exits 0."""
import os
import subprocess
import sys

from helpers.pipeline.settings import ROOT
from tests.conftest import GUARD_ENV, WORKING_NOTEBOOKS_ENV, guard_changes, guarded_files

WRITES = '''
import os
from pathlib import Path

WATCHED = Path(os.environ["HELPERS_GUARD_ROOT"])


def test_adds_a_file_to_data():
    (WATCHED / "data" / "quick" / "new.csv").write_text("made by a test")


def test_removes_a_file_of_data():
    (WATCHED / "data" / "old.csv").unlink()


def test_changes_a_figure():
    with open(WATCHED / "figures" / "fig.png", "ab") as f:
        f.write(b"more")


def test_writes_its_own_temporary_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fine.csv").write_text("not watched")
'''

LEAVES_THEM = '''
import os
from pathlib import Path

WATCHED = Path(os.environ["HELPERS_GUARD_ROOT"])


def test_reads_data_and_writes_elsewhere(tmp_path):
    assert (WATCHED / "data" / "old.csv").read_text() == "old"
    (tmp_path / "out.csv").write_text("not watched")


def test_fetches_fashion_mnist_into_data_raw():
    (WATCHED / "data" / "raw").mkdir()
    (WATCHED / "data" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"downloaded")
'''


def stand_in(root):
    """A project root with data/ and figures/ holding a few files."""
    (root / "data" / "quick").mkdir(parents=True)
    (root / "figures").mkdir()
    (root / "data" / "old.csv").write_text("old")
    (root / "data" / "quick" / "kept.csv").write_text("kept")
    (root / "figures" / "fig.png").write_bytes(b"\x89PNG")
    return root


def session(tmp_path, tests: str, watched) -> subprocess.CompletedProcess:
    """``python -m pytest`` on a file holding ``tests``, with the guard of tests/conftest.py watching ``watched``."""
    folder = tmp_path / "session"
    folder.mkdir()
    (folder / "test_tiny.py").write_text(tests)
    env = {**os.environ, GUARD_ENV: str(watched), WORKING_NOTEBOOKS_ENV: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), "-q", str(folder / "test_tiny.py")],
                          cwd=folder, env=env, capture_output=True, text=True)


def test_a_session_that_writes_data_or_figures_exits_non_zero_naming_what_changed(tmp_path):
    watched = stand_in(tmp_path / "project")
    done = session(tmp_path, WRITES, watched)
    out = done.stdout + done.stderr
    assert "4 passed" in out, out[-3000:]  # every test passed: the failure is the guard's
    assert done.returncode == 1, out[-3000:]
    assert "data/ and figures/ changed" in out and str(watched / "data") in out
    assert "added (1): data/quick/new.csv" in out
    assert "removed (1): data/old.csv" in out
    assert "changed (1): figures/fig.png" in out
    assert "fine.csv" not in out and "kept.csv" not in out


def test_a_session_that_leaves_them_alone_exits_zero(tmp_path):
    watched = stand_in(tmp_path / "project")
    done = session(tmp_path, LEAVES_THEM, watched)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "2 passed" in out, out[-3000:]
    assert "changed" not in out


def test_a_rewrite_of_the_same_size_is_a_change(tmp_path):
    """The guard compares sizes and modification times (no hashing): same-size content written later counts."""
    watched = stand_in(tmp_path)
    before = guarded_files(watched)
    assert set(before) == {"data/quick/", "data/old.csv", "data/quick/kept.csv", "figures/fig.png"}
    assert guard_changes(before, guarded_files(watched)) == []
    path = watched / "data" / "quick" / "kept.csv"
    path.write_text("KEPT")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write, even on a coarse clock
    assert guard_changes(before, guarded_files(watched)) == ["changed (1): data/quick/kept.csv"]
    (watched / "figures" / "new").mkdir()
    assert guard_changes(before, guarded_files(watched))[0] == "added (1): figures/new/"
