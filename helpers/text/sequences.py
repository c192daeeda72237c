"""A profile's text as the steps read it: one split of a corpus, tokenized with the model's tokenizer and
packed into sequences of one length (:class:`TextSequences`), the language model's counterpart of a
split of images.

The corpus of a profile's ``dataset`` (:func:`load_corpus`):

``fortunes``
    Debian's fortunes (:func:`helpers.text.corpus.fortunes`; ``data_root``: another fortunes folder);
``textfolder``
    ``data_root``, a folder of ``.txt``/``.jsonl`` files (:func:`helpers.text.corpus.text_folder`);
``hf:<name>[:<config>]``
    a Hugging Face ``datasets`` corpus, e.g. ``hf:wikitext:wikitext-103-raw-v1``: its ``text`` column, one
    document per non-empty row, downloaded into Hugging Face's cache on first use where the machine is
    online (``HF_DATASETS_OFFLINE=1`` reads only the cache).

Every step that runs a network iterates a dataset of ``(input, label)`` pairs; here an input is a
sequence of token ids, ``(length,)`` int64, and the label is 0 (unused: a language model's targets are
its next tokens). One position per sequence is sampled (01), as one per image; 03 indexes every position.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from . import corpus as _corpus
from .tokens import END_OF_TEXT, pack, tokenizer_digest

HF_PREFIX = "hf:"


def load_corpus(dataset: str, data_root, split: str) -> _corpus.Corpus:
    """The documents of one split of the profile's text ``dataset`` (see the module docstring).

    Raises
    ------
    helpers.text.corpus.CorpusError
        For a missing corpus or folder, an unknown split, or a Hugging Face corpus that cannot be read,
        with the fix.
    """
    if dataset == "fortunes":
        return _corpus.fortunes(split, root=data_root or _corpus.FORTUNES_DIR)
    if dataset == "textfolder":
        if not data_root:
            raise _corpus.CorpusError("dataset='textfolder' reads data_root: give the folder of .txt/.jsonl "
                                      "files, e.g. -p data_root=/path/to/texts.")
        return _corpus.text_folder(data_root, split)
    if dataset.startswith(HF_PREFIX):
        name, _, config = dataset[len(HF_PREFIX):].partition(":")
        return hf_corpus(name, config or None, split)
    raise _corpus.CorpusError(f"dataset={dataset!r} is no text corpus; use 'fortunes', 'textfolder' or "
                              "'hf:<name>[:<config>]'.")


def hf_corpus(name: str, config: str | None, split: str) -> _corpus.Corpus:
    """One split of a Hugging Face ``datasets`` corpus: the non-empty rows of its ``text`` column.

    ``split`` ``"test"`` falls back to ``"validation"`` where the corpus has no test split.
    """
    try:
        import datasets
    except ImportError:
        raise _corpus.CorpusError(f"dataset='hf:{name}' needs Hugging Face's `datasets`: pip install datasets "
                                  "(or give the corpus as a folder: dataset='textfolder').") from None
    try:
        splits = datasets.get_dataset_split_names(name, config)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, missing config: all are the same to the user
        raise _corpus.CorpusError(
            f"dataset='hf:{name}{':' + config if config else ''}' could not be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); give a name and config of the Hugging Face hub this "
            "machine can download or finds in its cache (HF_HOME), or a text folder (dataset='textfolder').") from None
    use = split if split in splits or split != "test" or "validation" not in splits else "validation"
    if use not in splits:
        raise _corpus.CorpusError(f"dataset='hf:{name}' has the splits {splits}, not {split!r}; set sample_split "
                                  f"or eval_split to one of them.")
    rows = datasets.load_dataset(name, config, split=use)
    if "text" not in rows.column_names:
        raise _corpus.CorpusError(f"dataset='hf:{name}' has no 'text' column (it has {rows.column_names}); "
                                  "give a corpus with one, or write it as .jsonl into a text folder.")
    documents = tuple(t for t in rows["text"] if t and t.strip())
    return _corpus.Corpus(f"hf:{name}{':' + config if config else ''}", use, documents)


class TextSequences(Dataset):
    """A corpus split as ``(n, length)`` token sequences: item ``i`` is ``(tokens (length,) int64, 0)``.

    Parameters
    ----------
    corpus : helpers.text.corpus.Corpus
    tokenizer : tokenizers.Tokenizer
        The model's.
    length : int
        Tokens per sequence.
    end_of_text : str
        The tokenizer's token between documents.

    Attributes
    ----------
    sequences : ndarray of int32, shape (n, length)
        Memory: 4 bytes per token of the split.
    input_shape, input_dtype
        Of one input, for an example forward without reading any text.
    kind : str
        ``"text"``: the grids show token contexts, not patches.
    """

    kind = "text"
    input_dtype = torch.long

    def __init__(self, corpus, tokenizer, length: int, end_of_text: str = END_OF_TEXT):
        self.corpus, self.tokenizer, self.length = corpus, tokenizer, int(length)
        self.sequences = pack(corpus.documents, tokenizer, self.length, end_of_text)
        self.input_shape = (self.length,)
        self._identity = {**corpus.identity(), "tokenizer": tokenizer_digest(tokenizer), "length": self.length,
                          "end_of_text": end_of_text,
                          "tokens": hashlib.sha256(self.sequences.tobytes()).hexdigest()[:16]}

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i):
        return torch.from_numpy(self.sequences[i].astype(np.int64)), 0

    def identity(self) -> dict:
        """The corpus split, the tokenizer, the length and a digest of the sequences (for artifact keys)."""
        return dict(self._identity)

    def describe(self, i) -> str:
        return f"sequence {int(i)} of {self.corpus.name} ({self.corpus.split})"

    def pieces(self, i) -> list[str]:
        """The text of each token of sequence ``i`` (a token that ends inside a character shows ``�``)."""
        return [self.tokenizer.decode([int(t)], skip_special_tokens=False) for t in self.sequences[int(i)]]

    def context(self, i, t: int, before: int = 12) -> tuple[str, str]:
        """``(text of up to `before` tokens before position t, text of token t)`` of sequence ``i``: what the
        model had read when its activation at ``t`` was taken."""
        t = int(t)
        ids = [int(x) for x in self.sequences[int(i)][max(0, t - before):t + 1]]
        return (self.tokenizer.decode(ids[:-1], skip_special_tokens=False) if len(ids) > 1 else "",
                self.tokenizer.decode(ids[-1:], skip_special_tokens=False))
