"""Token sequences: the tokenizer trained here, packing against a plain loop, seeded positions."""
import numpy as np
import pytest

from helpers.text import corpus, tokens


@pytest.fixture(scope="module")
def fortunes():
    train, test = corpus.fortunes("train"), corpus.fortunes("test")
    return train, test, tokens.train_tokenizer(train.documents, vocab_size=1024)


def test_the_tokenizer_is_the_same_each_time_and_round_trips_any_text(fortunes):
    train, test, tokenizer = fortunes
    assert tokenizer.get_vocab_size() == 1024 and tokenizer.token_to_id(tokens.END_OF_TEXT) == 0
    again = tokens.train_tokenizer(train.documents, vocab_size=1024)
    assert again.to_str() == tokenizer.to_str()
    assert tokens.tokenizer_digest(again) == tokens.tokenizer_digest(tokenizer)
    assert tokens.tokenizer_digest(tokens.train_tokenizer(train.documents[:2000], 1024)) \
        != tokens.tokenizer_digest(tokenizer)
    for text in test.documents[:200] + ("naïve café – ∑ 🙂\ttab", " leading space", ""):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    # the merges learned from the corpus shorten it: fewer tokens than bytes
    sample = "\n".join(test.documents[:200])
    assert len(tokenizer.encode(sample).ids) < 0.5 * len(sample.encode())


def test_packing_is_the_concatenation_cut_into_rows(fortunes):
    _, test, tokenizer = fortunes
    documents = test.documents[:300]
    flat = []
    for doc in documents:  # the plain loop
        flat += tokenizer.encode(doc).ids + [tokenizer.token_to_id(tokens.END_OF_TEXT)]
    for length in (2, 17, 64):
        packed = tokens.pack(documents, tokenizer, length)
        n = len(flat) // length
        assert packed.dtype == np.int32 and packed.shape == (n, length)
        np.testing.assert_array_equal(packed.ravel(), flat[: n * length])
    with pytest.raises(ValueError, match="no sequence of length=100000"):
        tokens.pack(documents[:2], tokenizer, 100000)
    with pytest.raises(ValueError, match="length=1 tokens"):
        tokens.pack(documents, tokenizer, 1)
