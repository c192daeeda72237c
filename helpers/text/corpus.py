"""Text corpora as documents, split into train and test deterministically.

Two sources, read the same way:

- ``fortunes``: Debian's ``fortunes`` package (``/usr/share/games/fortunes``, installed by ``make setup``
  where apt is usable), about 15,000 short texts; offline, for the quick profile.
- a folder of ``.txt`` and ``.jsonl`` files: each paragraph of a ``.txt`` (text between blank lines) and
  each line's ``"text"`` field of a ``.jsonl`` is a document. With ``train/`` and ``test/`` subfolders
  those are the splits; otherwise every document is assigned by its hash (below).

The split of a document depends on its text only (the SHA-256 of it): the same document is in the
same split whatever the order of the files, whatever else the corpus holds, and identical documents
(a quote in two fortune files) are kept once, so none is in both splits.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
"""Where Debian's ``fortunes`` package puts its files (one per topic, texts separated by ``%`` lines)."""

TEST_FRACTION = 0.1
"""Share of the documents a hash split puts in ``test``."""

SPLITS = ("train", "test")


class CorpusError(ValueError):
    """A corpus that cannot be read: missing, empty or malformed, with the fix in the message."""


@dataclass(frozen=True)
class Corpus:
    """The documents of one split of a text corpus.

    Attributes
    ----------
    name : str
        The source: ``"fortunes"`` or the folder's path.
    split : str
        ``"train"`` or ``"test"``.
    documents : tuple of str
        The documents, in a fixed order (by source file, then position in it).
    """

    name: str
    split: str
    documents: tuple

    def identity(self) -> dict:
        """What the documents are, for artifact keys: source, split, count and a digest of the texts."""
        h = hashlib.sha256()
        for doc in self.documents:
            h.update(doc.encode())
            h.update(b"\0")
        return {"kind": "text", "source": self.name, "split": self.split, "n": len(self.documents),
                "texts": h.hexdigest()[:16]}

    def __len__(self) -> int:
        return len(self.documents)


def in_test(text: str, test_fraction: float = TEST_FRACTION) -> bool:
    """Whether a hash split puts ``text`` in ``test``: the first 8 bytes of its SHA-256 as a fraction."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return value < test_fraction * 2 ** 64


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CorpusError(f"split={split!r} is not a split of a text corpus; give one of {SPLITS}.")


def _hash_split(documents, split: str, test_fraction: float) -> tuple:
    seen, kept = set(), []
    for doc in documents:
        if doc in seen:
            continue
        seen.add(doc)
        if in_test(doc, test_fraction) == (split == "test"):
            kept.append(doc)
    return tuple(kept)


def read_fortunes(path) -> list[str]:
    """The texts of one fortune file: what lies between lines holding only ``%``, stripped; empty ones dropped."""
    texts, current = [], []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip() == "%":
            texts.append("\n".join(current).strip())
            current = []
        else:
            current.append(line.rstrip())
    texts.append("\n".join(current).strip())
    return [t for t in texts if t]


def fortune_files(root=FORTUNES_DIR) -> list[Path]:
    """The fortune files of ``root``, sorted: regular files without the ``.dat`` index or ``.u8`` links."""
    root = Path(root)
    return sorted(f for f in root.iterdir()
                  if f.is_file() and not f.is_symlink() and f.suffix not in (".dat", ".u8"))


def fortunes(split: str = "train", root=FORTUNES_DIR, test_fraction: float = TEST_FRACTION) -> Corpus:
    """Debian's fortunes as a corpus.

    Parameters
    ----------
    split : {"train", "test"}
    root : path
        The fortunes folder (default: Debian's).
    test_fraction : float
        Share of the documents in ``test`` (by hash, :func:`in_test`).
    """
    _check_split(split)
    root = Path(root)
    files = fortune_files(root) if root.is_dir() else []
    if not files:
        raise CorpusError(f"no fortune files in {root}: install Debian's `fortunes` package "
                          "(`apt-get install fortunes`, which `make setup` does where apt is usable), "
                          "or give a folder of .txt/.jsonl files instead.")
    documents = [doc for f in files for doc in read_fortunes(f)]
    return Corpus("fortunes", split, _hash_split(documents, split, test_fraction))


def read_documents(path) -> list[str]:
    """The documents of one file: the paragraphs of a ``.txt``, the ``"text"`` fields of a ``.jsonl``."""
    path = Path(path)
    if path.suffix == ".txt":
        paragraphs, current = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                current.append(line.rstrip())
            elif current:
                paragraphs.append("\n".join(current))
                current = []
        if current:
            paragraphs.append("\n".join(current))
        return paragraphs
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}, line {number}, is not JSON ({e.msg}): a .jsonl file holds one "
                              'object per line, {"text": "..."}; fix or remove that line.') from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'{path}, line {number}, has no "text" string: a .jsonl file holds one object '
                              'per line, {"text": "..."}; fix or remove that line.')
        if record["text"].strip():
            documents.append(record["text"])
    return documents


def _text_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in (".txt", ".jsonl"))


def text_folder(root, split: str = "train", test_fraction: float = TEST_FRACTION) -> Corpus:
    """A folder of ``.txt`` / ``.jsonl`` files as a corpus (the module's docstring says how it is read).

    Parameters
    ----------
    root : path
        The folder; with ``train/`` and ``test/`` subfolders those are the splits.
    split : {"train", "test"}
    test_fraction : float
        Share of the documents in ``test`` when the folder has no split subfolders.
    """
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"text folder {root} does not exist: give a folder of .txt/.jsonl files "
                          "(with train/ and test/ subfolders, or one set of files split by hash).")
    if (root / "train").is_dir() and (root / "test").is_dir():
        files = _text_files(root / split)
        documents = tuple(dict.fromkeys(doc for f in files for doc in read_documents(f)))
    else:
        files = _text_files(root)
        documents = _hash_split([doc for f in files for doc in read_documents(f)], split, test_fraction)
    if not files:
        raise CorpusError(f"no .txt or .jsonl file in {root / split if (root / 'train').is_dir() else root}: "
                          "put the corpus there as .txt (a document per paragraph) or .jsonl "
                          '({"text": ...} per line) files.')
    if not documents:
        raise CorpusError(f"the {split} split of {root} holds no document: its files are empty, or too few "
                          f"documents to put a share of {test_fraction} in test; add text or split it into "
                          "train/ and test/ folders.")
    return Corpus(str(root), split, documents)
