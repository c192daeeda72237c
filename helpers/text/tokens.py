"""Documents as token sequences of one length.

A language model's counterpart of images: the documents of a :class:`~helpers.text.corpus.Corpus` are
tokenized, joined with an end-of-text token between them (GPT-2's packing: no padding, no document
dropped), and cut into sequences of ``length`` tokens; the tail shorter than ``length`` is dropped
(:mod:`helpers.text.sequences` serves them to the steps).

The tokenizer of a stand-in model is a byte-level BPE trained on the training split with Hugging Face's
``tokenizers`` (:func:`train_tokenizer`); any ``tokenizers.Tokenizer`` (a Hugging Face model's, say)
can be given instead.
"""
from __future__ import annotations

import hashlib

import numpy as np

END_OF_TEXT = "<|endoftext|>"
"""The token between documents (GPT-2's name for it)."""


def train_tokenizer(documents, vocab_size: int = 2048, min_frequency: int = 2):
    """A byte-level BPE tokenizer trained on ``documents``.

    Parameters
    ----------
    documents : sequence of str
        The training split's documents; the result depends on them and their order only.
    vocab_size : int
        Tokens in the vocabulary, the 256 bytes and :data:`END_OF_TEXT` included.
    min_frequency : int
        Pairs seen fewer times are never merged.

    Returns
    -------
    tokenizers.Tokenizer
        Id 0 is :data:`END_OF_TEXT`; ``decode(encode(text).ids) == text`` for any text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for the 256 bytes and the end-of-text "
                         "token; give 257 or more.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(documents), trainer=trainer, length=len(documents))
    return tokenizer


def tokenizer_digest(tokenizer) -> str:
    """A digest of what the tokenizer does (its JSON serialisation), for artifact keys."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def pack(documents, tokenizer, length: int, end_of_text: str = END_OF_TEXT) -> np.ndarray:
    """The documents' tokens, end-of-text between them, cut into sequences of ``length``.

    Parameters
    ----------
    documents : sequence of str
    tokenizer : tokenizers.Tokenizer
        Must know ``end_of_text``.
    length : int
        Tokens per sequence (2 or more: a position and the token after it).

    Returns
    -------
    numpy.ndarray of int32, shape (n_sequences, length)
        Memory: 4 bytes per token of the split, plus one document's encoding at a time.
    """
    if length < 2:
        raise ValueError(f"length={length} tokens: a sequence needs 2 or more (a token and the next one).")
    separator = tokenizer.token_to_id(end_of_text)
    if separator is None:
        raise ValueError(f"the tokenizer has no {end_of_text!r} token to put between documents; give its "
                         "end-of-text token as end_of_text.")
    chunks = []
    for doc in documents:
        chunks.append(np.asarray(tokenizer.encode(doc).ids, dtype=np.int32))
        chunks.append(np.asarray([separator], dtype=np.int32))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    n = len(ids) // length
    if n == 0:
        raise ValueError(f"{len(ids)} tokens make no sequence of length={length}: give a shorter length "
                         "or more text.")
    return ids[: n * length].reshape(n, length)
