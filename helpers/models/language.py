"""Language models as the steps see them: how one reads text (its tokenizer, end-of-text token and sequence
length, :func:`text_input`), the settings it changes in a profile made for images (:func:`text_defaults`), and
the steps made for networks that read images (06-08, :func:`images_only`)."""
from __future__ import annotations

import functools

from ..pipeline.rules import is_text_dataset
from ..text.tokens import END_OF_TEXT
from .registry import default_layers, spec  # noqa: F401  default_layers: for load_profile

TEXT_LENGTH = 128
"""Tokens per sequence of a Hugging Face model (or its longest context, if shorter)."""


def text_defaults(base, model: str, changes: dict) -> dict:
    """The settings a language model changes in a profile made for images, unless they are given: the text of
    Debian's fortunes (``dataset="fortunes"``, whatever the profile's images), its ``test`` split to evaluate on,
    at most :data:`TEXT_ABLATION_EVAL` sequences in the ablation sweep, and ``mini_gpt``'s shipped weights (it
    is retrained by its own command); ``{}`` for an image model."""
    try:
        s = spec(model)
    except ValueError:
        return {}  # refused with the model's own message later
    if not s.text or is_text_dataset(changes.get("dataset", base.dataset)):
        return {}
    out = {} if "dataset" in changes else {"dataset": "fortunes", "data_root": changes.get("data_root")}
    if "eval_split" not in changes:
        out["eval_split"] = "test"
    if "retrain" not in changes and s.source == "standin":
        out["retrain"] = False
    if "ablation_eval" not in changes and base.ablation_eval is not None:
        out["ablation_eval"] = min(base.ablation_eval, TEXT_ABLATION_EVAL)
    return out


TEXT_ABLATION_EVAL = 256
"""Sequences of the ablation sweep of a language model on a profile made for images (each holds length - 1
next-token predictions: 16,128 for ``mini_gpt``'s 64 tokens)."""


IMAGES_ONLY = ("06-08 are for networks that read images; model={model!r} is a language model, whose steps end "
               "at 05 (docs/text.md)")
"""Why a language model has no user study (06, 07) and no compositional explanations (08)."""


def images_only() -> dict:
    """``applies`` and ``why_not`` of a step made for networks that read images (06-08), for
    :func:`helpers.pipeline.provenance.declare`."""
    return {"applies": lambda p: not spec(p.model).text, "why_not": lambda p: IMAGES_ONLY.format(model=p.model)}


@functools.lru_cache(maxsize=4)
def text_input(name: str) -> tuple:
    """How a language model reads text: ``(tokenizer, end-of-text token, tokens per sequence)``.

    ``mini_gpt`` (and its untrained control): its shipped tokenizer (checked against its record) and its
    64 positions; a Hugging Face model: its own fast tokenizer (``AutoTokenizer``) and
    ``min(TEXT_LENGTH, its longest context)``.

    Raises
    ------
    ValueError
        For a model that reads images, or a Hugging Face model without a fast tokenizer.
    """
    s = spec(name)
    if not s.text:
        raise ValueError(f"model={name!r} reads {s.input}, not text.")
    if s.source == "untrained":
        return text_input(s.target)
    if s.source == "standin":
        from . import shipped_lm

        return shipped_lm.tokenizer(s.name), END_OF_TEXT, int(shipped_lm.record(s.name)["recipe"]["length"])
    from transformers import AutoConfig, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(s.target)
    except (OSError, ValueError) as e:
        raise ValueError(f"model={name!r}: its tokenizer could not be loaded ({str(e).splitlines()[0]}); save it "
                         "beside the model (tokenizer.save_pretrained(folder)) or use a hub name this machine "
                         "can read.") from None
    if not getattr(tok, "is_fast", False) or tok.eos_token is None:
        raise ValueError(f"model={name!r}: its tokenizer is not a fast tokenizer with an end-of-text token; "
                         "the sequences are packed with one (tokenizers.Tokenizer).")
    config = AutoConfig.from_pretrained(s.target)
    longest = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or TEXT_LENGTH
    return tok.backend_tokenizer, tok.eos_token, int(min(TEXT_LENGTH, longest))
