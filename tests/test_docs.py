"""The README and docs/: the README's size, every relative link and anchor, every page linked, every
file and name a page mentions; LICENSE and CITATION.cff."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.*?)\1")
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps non-ASCII letters and digits, and _
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page, duplicates numbered -1, -2, … as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """Every Markdown link target of a page, outside code blocks and inline code."""
    out = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        out.extend(LINK.findall(INLINE_CODE.sub("", line)))
    return out


def broken_links(page: Path) -> list[str]:
    """The page's relative links whose file or heading does not exist, each with the reason."""
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                broken.append(f"{target}: an anchor into {dest}, which is not a Markdown page")
            elif anchor not in anchors(dest):
                broken.append(f"{target}: no heading #{anchor} in {dest}")
    return broken


def test_readme_is_at_most_15_kb():
    size = README.stat().st_size
    assert size <= 15 * 1024, f"README.md is {size} bytes; move text to docs/"


def test_there_are_docs_pages():
    assert (DOCS / "README.md").exists() and len(PAGES) > 2


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README)
        if not EXTERNAL.match(target) and target.partition("#")[0]
    }
    missing = [str(p.relative_to(ROOT)) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert missing == [], f"not linked from README.md: {missing}"


def test_every_docs_page_is_listed_in_the_docs_index():
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in links(index) if t.partition("#")[0]}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p != index and p.resolve() not in linked]
    assert missing == [], f"not listed in docs/README.md: {missing}"


def test_the_quick_counts_table_stays_in_the_readme():
    lines = README.read_text(encoding="utf-8").splitlines()
    header = "| layer | d | PCA pre-ReLU | PCA post-ReLU | neurons pre-ReLU |"
    i = lines.index(header)
    assert re.fullmatch(r"\|(-+\|){5}", lines[i + 1])
    rows = [line for line in lines[i + 2:i + 20] if line.startswith("|")]
    assert rows and all(re.fullmatch(r"\| \S+ \| \d+ (\| (\d+ / \d+|—) ){3}\|", r) for r in rows)


def test_slugs_are_githubs():
    assert slug("Beyond PCA: ICA, NMF and sparse-autoencoder bases") == "beyond-pca-ica-nmf-and-sparse-autoencoder-bases"
    assert slug("The `mini_alexnet` network") == "the-mini_alexnet-network"
    assert slug("Décisions, où l'article se tait") == "décisions-où-larticle-se-tait"
    assert slug(" The paper profile on a GPU (ImageNet) ") == "the-paper-profile-on-a-gpu-imagenet"
    assert slug("See [the site](site.md)") == "see-the-site"


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Part\n\n## Part\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Two words\n\n"
        "```bash\n# not a heading\nsee [x](inside-code.md)\n```\n\n"
        "Good: [a](other.md), [b](other.md#part), [c](other.md#part-1), [d](#two-words),\n"
        "[e](code.py), [f](https://example.org/missing), [g](mailto:a@b.c), `[h](in-code.md)`.\n"
        "Bad: [i](missing.md), [j](other.md#nope), [k](#not-here), [l](#not-a-heading),\n"
        "[m](other.md#part-2), [n](code.py#x).\n",
        encoding="utf-8",
    )
    found = [b.split(":")[0] for b in broken_links(page)]
    assert found == ["missing.md", "other.md#nope", "#not-here", "#not-a-heading", "other.md#part-2", "code.py#x"]


# --- Every file and name a page mentions in inline code exists in the repository -----------------
EXTENSIONS = {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".cff", ".txt", ".json", ".csv", ".ipynb"}
GENERATED = ("data/", "figures/", "site/", ".venv/", "~", "/")  # outputs and paths outside the tree
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.")
ALL_CAPS = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
SPAN = re.compile(r"(`+)(.+?)\1")
PROSE_FILE = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_-]*\.(?:md|cff|txt))\b")  # DESIGN.md, CONTRIBUTING.md
PY_MODULE = re.compile(r"^(?:time\s+)?(?:\S*/)?python3?\s+-m\s+(\S+)")
PY_SCRIPT = re.compile(r"^(?:time\s+)?(?:\S*/)?python3?\s+(bench/\S+\.py)\b")
MAKE = re.compile(r"^(?:time\s+)?make\s+(\S+)")
PLACED = re.compile(r"`([A-Za-z_]\w*)` in `([^`\s<>*]+\.py)`")  # `LAYER_TABLE` in `helpers/models/registry.py`


def tracked_files(root: Path) -> set[str]:
    """The repository's files, as POSIX paths from root: tracked ones and new ones git does not ignore.

    Files deleted from the working tree do not count. Outside a git checkout: every file under root
    but the generated folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=True,
        ).stdout.decode("utf-8")
        files = {f for f in out.split("\0") if f}
    except (OSError, subprocess.CalledProcessError):
        generated = {".git", ".venv", "data", "figures", "site"}
        files = set()
        for p in root.rglob("*"):
            parts = p.relative_to(root).parts
            if p.is_file() and parts[0] not in generated and not any(
                part in (".git", "__pycache__") or part.endswith(".egg-info") for part in parts
            ):
                files.add(p.relative_to(root).as_posix())
    return {f for f in files if (root / f).exists()}


@functools.lru_cache(maxsize=None)
def repository(root: Path) -> dict:
    """What a page may name: files, folders, top-level entries, .py words and Makefile variables, Makefile
    targets."""
    files = tracked_files(root)
    dirs = {str(PurePosixPath(f).parents[i]) for f in files for i in range(len(PurePosixPath(f).parts) - 1)}
    words: set[str] = set()
    for f in files:
        if f.endswith(".py") or f == "Makefile":
            words.update(re.findall(r"\b[A-Z][A-Z0-9_]*\b", (root / f).read_text(encoding="utf-8", errors="replace")))
    targets: set[str] = set()
    makefile = root / "Makefile"
    if makefile.exists():
        for line in makefile.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^([A-Za-z0-9_.%-][A-Za-z0-9_.%\s-]*?)\s*::?(?!=)", line)
            if m:
                targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return {
        "paths": files | dirs,
        "top": {f.split("/")[0] for f in files},
        "names": {PurePosixPath(f).name for f in files},
        "words": words,
        "targets": targets,
    }


def prose_blocks(page: Path) -> list[str]:
    """The page's paragraphs, tables and list runs outside fenced code blocks, each joined into one line."""
    blocks, block = [], []
    for line in [*prose_lines(page.read_text(encoding="utf-8")), ""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            blocks.append(" ".join(block))
            block = []
    return blocks


def code_spans(page: Path) -> list[str]:
    """Every inline code span of a page outside fenced code blocks (a span may cross a line break)."""
    return [" ".join(m.group(2).split()) for block in prose_blocks(page) for m in SPAN.finditer(block)]


def placed_names(page: Path) -> list[tuple[str, str]]:
    """Every ``(name, file)`` a page places with "`NAME` in `file.py`"."""
    return [m.groups() for block in prose_blocks(page) for m in PLACED.finditer(block)]


def resolves(name: str) -> bool:
    """Whether a dotted name `helpers.a.b.C` is a module, or an attribute of its longest module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and not ".".join(parts[:i]).startswith(e.name):  # the module exists but imports something missing
                raise
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def runnable(module: str) -> bool:
    """Whether `python -m module` finds something to run."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        return importlib.util.find_spec(module + ".__main__") is not None
    return True


def path_problem(span: str, root: Path, repo: dict) -> str | None:
    """Why a path-like span names nothing in the repository, or None."""
    path, _, attr = span.partition(":")
    if attr and not re.fullmatch(r"[A-Za-z_][\w.]*", attr):
        path, attr = span, ""
    path = path.rstrip("/")
    suffix = PurePosixPath(path).suffix
    if "/" not in path:
        if suffix in (".py", ".md") and path not in repo["names"]:
            return f"no file named {path} in the repository"
        return None
    if path.startswith(GENERATED) or path.startswith("$"):
        return None
    if path.split("/")[0] in repo["top"]:
        if path not in repo["paths"]:
            return f"no {path} in the repository"
    elif suffix in (".py", ".md") and not any(p == path or p.endswith("/" + path) for p in repo["paths"]):
        return f"no file ending in /{path} in the repository"  # a path inside helpers/, e.g. explain/formula.py
    else:
        return None
    if attr and path.startswith("helpers/") and suffix == ".py":
        module = path[: -len(".py")].replace("/", ".")
        if not resolves(f"{module}.{attr}"):
            return f"{module} has no {attr}"
    return None


def stale_names(page: Path, root: Path = ROOT) -> list[str]:
    """The page's inline code spans (and prose mentions of top-level documents) that name a file,
    module, attribute, Makefile target or constant the repository does not have, each with the reason."""
    repo = repository(root)
    helpers_children = {m.name for m in pkgutil.iter_modules(importlib.import_module("helpers").__path__)}
    found = []
    for span in code_spans(page):
        problem = None
        if " " in span:  # a command: check the module, script or target it names
            if m := PY_MODULE.match(span):
                module = m.group(1)
                if module.split(".")[0] == "helpers" and not PLACEHOLDER.search(module) and not runnable(module):
                    problem = f"no module {module} to run"
            elif m := PY_SCRIPT.match(span):
                if not PLACEHOLDER.search(m.group(1)):
                    problem = path_problem(m.group(1), root, repo)
            elif m := MAKE.match(span):
                target = m.group(1)
                if "=" not in target and not PLACEHOLDER.search(target) and target not in repo["targets"]:
                    problem = f"no Makefile target {target}"
        elif PLACEHOLDER.search(span):
            continue
        elif m := re.fullmatch(r"\$?([A-Z][A-Z0-9_]*)(?:=.*)?", span):  # a constant or an environment variable
            name = m.group(1)
            if len(name) >= 4 and ALL_CAPS.fullmatch(name) and name not in repo["words"]:
                problem = f"{name} appears in no .py file"
        elif DOTTED.fullmatch(span) and PurePosixPath(span).suffix not in EXTENSIONS and span not in repo["names"]:
            first = span.split(".")[0]
            if first == "helpers" and not resolves(span):
                problem = f"{span} does not resolve"
            elif first in helpers_children and not resolves(f"helpers.{span}"):
                problem = f"helpers.{span} does not resolve"
        elif "/" in span or PurePosixPath(span.partition(":")[0]).suffix in EXTENSIONS:
            problem = path_problem(span, root, repo)
        if problem:
            found.append(f"`{span}`: {problem}")
    for name, file in placed_names(page):
        if path_problem(file, root, repo) is None and (root / file).is_file():
            if not re.search(rf"\b{name}\b", (root / file).read_text(encoding="utf-8", errors="replace")):
                found.append(f"`{name}` in `{file}`: no {name} in {file}")
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for name in PROSE_FILE.findall(SPAN.sub("", line)):
            if name not in repo["names"]:
                found.append(f"{name}: no file named {name} in the repository")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_and_name_a_page_mentions_exists(page):
    assert stale_names(page) == []


def test_stale_names_are_caught(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "tool.py").write_text("GOOD_NAME = 1\nos.environ.get('GOOD_ENV')\n", encoding="utf-8")
    (tmp_path / "helpers" / "other.py").write_text("OTHER_NAME = 2\n", encoding="utf-8")
    (tmp_path / "helpers" / "tool.css").write_text("", encoding="utf-8")
    (tmp_path / "tests" / "site").mkdir(parents=True)
    (tmp_path / "tests" / "site" / "test_build.py").write_text("", encoding="utf-8")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "pca.py").write_text("", encoding="utf-8")
    (tmp_path / "NOTES.md").write_text("", encoding="utf-8")
    (tmp_path / "Makefile").write_text(".PHONY: figures\nVENV ?= .venv\nfigures: setup\n\tdo\nsetup:\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n`tests/in_a_fence.py` `make nowhere`\n```\n\n"
        "Good: `helpers/tool.py`, `tests/site/`, `tests/site/test_build.py`, `test_build.py`, `tool.py`,\n"
        "`NOTES.md`, `Makefile`, `data/quick/x.csv`, `figures/a/b.png`, `~/nets/x.py`, `/tmp/y.py`,\n"
        "`tests/<name>.py`, `helpers/*.py`, `fig.{png,pdf}`, `GOOD_NAME`, `GOOD_ENV=1`, `$GOOD_ENV`,\n"
        "`SHORT`, `ABC_`, `make figures`, `make setup FAISS=gpu`, `make\nfigures MODEL=x`,\n"
        "`python bench/pca.py --n 5`, `python -m helpers.run --x`, `helpers.search.TorchFlat`,\n"
        "`search.TorchFlat`, `helpers.pipeline`, `torch.nn.Conv2d`, `meta.json`, `tool.css`, NOTES.md,\n"
        "`GOOD_NAME` in `helpers/tool.py`.\n\n"
        "Bad: `tests/test_site.py`, `helpers/missing/`, `observer.py`, `DESIGN.md`, `BAD_NAME`,\n"
        "`BAD_ENV=1`, `make nowhere`, `python bench/gone.py`, `python -m helpers.gone --x`,\n"
        "`helpers.search.NoSuch`, `search.NoSuch`, `helpers.nowhere`, `pipeline/gone.py`, `site.nope`,\n"
        "`OTHER_NAME` in `helpers/tool.py` (it is in `helpers/other.py`), GONE.md.\n",
        encoding="utf-8",
    )
    found = [re.match(r"`?([^`:]+)", f).group(1) for f in stale_names(page, tmp_path)]
    assert found == [
        "tests/test_site.py", "helpers/missing/", "observer.py", "DESIGN.md", "BAD_NAME", "BAD_ENV=1",
        "make nowhere", "python bench/gone.py", "python -m helpers.gone --x", "helpers.search.NoSuch",
        "search.NoSuch", "helpers.nowhere", "pipeline/gone.py", "site.nope", "OTHER_NAME", "GONE.md",
    ]


# --- LICENSE and CITATION.cff agree with pyproject.toml ------------------------------------------

PAPER_TITLE = "Neuron-based explanations of neural networks sacrifice completeness and interpretability"


def project() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_license_is_pyprojects():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project()["license"] == "MIT"
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    assert re.search(r"^Copyright \(c\) \d{4} \S", text, re.MULTILINE)


def test_citation_cff_describes_this_package_and_cites_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert isinstance(cff, dict)
    assert str(cff["cff-version"]) == "1.2.0"
    assert cff["message"] and cff["type"] == "software"
    assert PAPER_TITLE in cff["title"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert str(cff["version"]) == project()["version"]
    assert cff["license"] == project()["license"]
    paper = cff["preferred-citation"]
    assert paper["type"] == "article"
    assert paper["title"] == PAPER_TITLE
    assert paper["year"] == 2025
    assert paper["journal"] == "Transactions on Machine Learning Research"
    assert [a["family-names"] for a in paper["authors"]] == ["Dey", "Taylor", "Wong", "Tripp", "Taylor"]
    assert "2011.03043" in paper["url"]
    assert any("2011.03043" in str(i["value"]) for i in paper["identifiers"])
