"""The shipped language model's files: ``mini_gpt``'s record and its tokenizer, checked against the record.

Beside the vision stand-ins' checkpoints in ``helpers/models/weights/`` (:mod:`helpers.models.shipped` checks
the checkpoint itself); here the parts that a model name and a profile's text need before any weight is
read: the network's shape and the tokenizer that turns the corpus into its sequences.
"""
from __future__ import annotations

from pathlib import Path

from ..pipeline import store
from .gpt import MiniGPT

FOLDER = Path(__file__).resolve().parent / "weights"
"""Where the shipped checkpoints and their records live (package data)."""

MODEL = "mini_gpt"


class TamperedWeightsError(store.CorruptArtifactError):
    """A shipped file (checkpoint or tokenizer) whose bytes are not those its record names."""


def record(model: str = MODEL) -> dict:
    """The record of the shipped weights (``<model>.json``): recipe, files' SHA-256, held-out numbers."""
    path = FOLDER / f"{model}.json"
    if not path.exists():
        raise FileNotFoundError(f"the package ships no record for {model} ({path} is missing); reinstall the "
                                f"package, or train it: python -m helpers.models.lm_training --ship.")
    return store.read_json(path, f"a reinstall of the package (its file {path.name})")


def network(recipe: dict) -> MiniGPT:
    """An untrained ``mini_gpt`` of a recipe's shape (the shipped one's: ``network(record()["recipe"])``)."""
    return MiniGPT(vocab_size=recipe["vocab_size"], length=recipe["length"], d_model=recipe["d_model"],
                   n_layers=recipe["n_layers"], n_heads=recipe["n_heads"], d_mlp=recipe["d_mlp"])


def tokenizer_path(model: str = MODEL) -> Path:
    """The shipped tokenizer's file, beside the checkpoint and its record."""
    return FOLDER / f"{model}.tokenizer.json"


def tokenizer(model: str = MODEL):
    """The shipped tokenizer (``tokenizers.Tokenizer``), its file checked against the record's SHA-256.

    Raises
    ------
    TamperedWeightsError
        When the file is not the tokenizer its record names.
    """
    from tokenizers import Tokenizer

    path, rec = tokenizer_path(model), record(model)
    found = store.file_sha256(path) if path.exists() else "missing"
    if found != rec["tokenizer"]["sha256"]:
        raise TamperedWeightsError(
            f"{path} is not the tokenizer its record names: its SHA-256 is {found[:16]}…, the record says "
            f"{rec['tokenizer']['sha256'][:16]}…. Restore it (git checkout -- helpers/models/weights/{path.name}), "
            "or retrain: python -m helpers.models.lm_training.")
    return Tokenizer.from_file(str(path))
