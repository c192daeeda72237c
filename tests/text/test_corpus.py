"""Text corpora: Debian's fortunes read as strfile counts them, folders of .txt/.jsonl, the hash split."""
import json
import struct

import pytest

from helpers.text import corpus


def strfile_count(path) -> int:
    """The number of texts strfile wrote in a fortune file's ``.dat`` index (its second big-endian word)."""
    return struct.unpack(">5I", (path.parent / f"{path.name}.dat").read_bytes()[:20])[1]


def test_every_fortune_file_holds_the_texts_strfile_counted():
    files = corpus.fortune_files()
    assert len(files) > 30
    for f in files:
        assert len(corpus.read_fortunes(f)) == strfile_count(f), f.name


def test_fortunes_split_by_text_once_each_and_about_a_tenth_in_test():
    train, test = corpus.fortunes("train"), corpus.fortunes("test")
    every = {doc for f in corpus.fortune_files() for doc in corpus.read_fortunes(f)}
    assert not set(train.documents) & set(test.documents)
    assert set(train.documents) | set(test.documents) == every
    assert len(train) + len(test) == len(every)  # duplicates kept once
    assert 0.08 < len(test) / len(every) < 0.12
    assert all(corpus.in_test(doc) for doc in test.documents)
    assert train.identity() == corpus.fortunes("train").identity() != test.identity()


def test_a_documents_split_depends_on_its_text_alone(tmp_path):
    docs = [f"document number {i}" for i in range(200)]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("\n\n".join(docs[:100]) + "\n")
    (tmp_path / "a" / "two.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[100:]))
    whole = corpus.text_folder(tmp_path / "a", "test")
    (tmp_path / "b").mkdir()  # other files, other order, more documents
    (tmp_path / "b" / "0.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in reversed(docs)))
    (tmp_path / "b" / "1.txt").write_text("another\n\nand another one\n")
    other = corpus.text_folder(tmp_path / "b", "test")
    assert set(whole.documents) == {d for d in docs if corpus.in_test(d)} <= set(other.documents)
    assert len(whole) + len(corpus.text_folder(tmp_path / "a", "train")) == 200


def test_a_folder_with_split_subfolders_and_its_formats(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "t.txt").write_text("first line\nsame paragraph\n\n\nsecond\n")
    (tmp_path / "test" / "t.jsonl").write_text('{"text": "held out"}\n\n{"text": "  "}\n{"text": "again"}\n')
    assert corpus.text_folder(tmp_path, "train").documents == ("first line\nsame paragraph", "second")
    assert corpus.text_folder(tmp_path, "test").documents == ("held out", "again")


@pytest.mark.parametrize("content, message", [('{"text": "ok"}\nnot json\n', "line 2, is not JSON"),
                                              ('{"body": "x"}\n', 'line 1, has no "text" string')])
def test_a_malformed_jsonl_line_is_named(tmp_path, content, message):
    (tmp_path / "c.jsonl").write_text(content)
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.text_folder(tmp_path)


def test_missing_or_empty_sources_say_the_fix(tmp_path):
    with pytest.raises(corpus.CorpusError, match="apt-get install fortunes"):
        corpus.fortunes(root=tmp_path)
    with pytest.raises(corpus.CorpusError, match="does not exist"):
        corpus.text_folder(tmp_path / "nowhere")
    with pytest.raises(corpus.CorpusError, match=r"no \.txt or \.jsonl file"):
        corpus.text_folder(tmp_path)
    (tmp_path / "one.txt").write_text("a single document\n")
    split = "test" if not corpus.in_test("a single document") else "train"
    with pytest.raises(corpus.CorpusError, match=f"the {split} split .* holds no document"):
        corpus.text_folder(tmp_path, split)
    with pytest.raises(corpus.CorpusError, match="split='val'"):
        corpus.fortunes("val")
