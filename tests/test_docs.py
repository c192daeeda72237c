"""The README and docs/: the README's size, every relative link and anchor, every page linked."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

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
