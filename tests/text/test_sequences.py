"""A profile's text as the steps read it: a corpus split packed with the model's tokenizer, and where each of the
three kinds of text dataset comes from."""
import sys

import numpy as np
import pytest
import torch

from helpers.text import corpus, sequences, tokens

DOCS = tuple(f"Fortune number {i}: the quick brown fox jumps over the lazy dog {i * 7}." for i in range(60))


@pytest.fixture(scope="module")
def tokenizer():
    return tokens.train_tokenizer(DOCS, vocab_size=300)


def test_a_split_is_its_documents_packed_into_sequences_of_one_length(tokenizer):
    split = corpus.Corpus("toy", "train", DOCS)
    data = sequences.TextSequences(split, tokenizer, 16)
    packed = tokens.pack(DOCS, tokenizer, 16)
    assert len(data) == len(packed) and data.input_shape == (16,) and data.kind == "text"
    x, label = data[3]
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(packed[3].astype(np.int64))) and label == 0
    ids = data.sequences[3]
    before, token = data.context(3, 10, before=4)
    assert before == tokenizer.decode([int(i) for i in ids[6:10]], skip_special_tokens=False)
    assert token == tokenizer.decode([int(ids[10])], skip_special_tokens=False)
    assert "".join(data.pieces(3)) == tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
    assert data.context(3, 0) == ("", data.pieces(3)[0])
    same = sequences.TextSequences(split, tokenizer, 16).identity()
    assert same == data.identity()
    assert sequences.TextSequences(split, tokenizer, 8).identity() != same  # another length
    other = corpus.Corpus("toy", "train", DOCS[:-1])
    assert sequences.TextSequences(other, tokenizer, 16).identity()["texts"] != same["texts"]


def test_each_kind_of_text_dataset_is_read_or_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS))
    found = sequences.load_corpus("textfolder", str(tmp_path), "train")
    assert found.name == str(tmp_path) and 0 < len(found) < len(DOCS)
    assert sequences.load_corpus("fortunes", None, "test").identity() == corpus.fortunes("test").identity()
    with pytest.raises(corpus.CorpusError, match="reads data_root"):
        sequences.load_corpus("textfolder", None, "train")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(corpus.CorpusError, match="pip install datasets"):
        sequences.load_corpus("hf:wikitext:wikitext-103-raw-v1", None, "train")


def test_a_hugging_face_corpus_is_read_through_datasets(tmp_path, monkeypatch):
    """A folder of JSON lines read by ``datasets.load_dataset`` (its real path, offline): the ``text`` column,
    one document per non-empty row; a split it lacks is refused with those it has."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, n in (("train", 30), ("test", 5)):
        rows = [f'{{"text": "{split} document {i}"}}' for i in range(n)] + ['{"text": ""}']
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    test = sequences.load_corpus(f"hf:{folder}", None, "test")
    assert (test.name, test.split, test.documents) == (f"hf:{folder}", "test", tuple(f"test document {i}" for i in range(5)))
    assert len(sequences.load_corpus(f"hf:{folder}", None, "train")) == 30
    with pytest.raises(corpus.CorpusError, match=r"has the splits \['train', 'test'\], not 'validation'"):
        sequences.load_corpus(f"hf:{folder}", None, "validation")
    with pytest.raises(corpus.CorpusError, match="could not be read"):
        sequences.load_corpus(f"hf:{tmp_path / 'nothing'}", None, "train")
