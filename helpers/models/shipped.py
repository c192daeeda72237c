"""The stand-ins' trained weights that ship with the package, each with its record.

The quick profile's numbers come from these checkpoints, not from training on
first use: pinned training (:mod:`helpers.models.training`) gives the same weights on
one machine, but not across CPU vendors and BLAS builds. Each stand-in has
``helpers/models/weights/<model>.pt`` (a state dict, loaded with ``weights_only=True``)
and ``helpers/models/weights/<model>.json``, its record:

``sha256``
    of the ``.pt`` file; loading checks it, and the model's id in every
    artifact key is ``sha256:<it>``;
``weights_sha256``
    of the tensors themselves (names and bytes, :func:`helpers.models.state_hash`):
    what a retrained checkpoint is compared with;
``recipe``
    the training settings, seed, training images and the code digest of the
    modules that define and train the network;
``trained_with``
    the torch version, CPU, threads and numerical environment;
``test_correct``, ``test_images``, ``test_accuracy``
    measured on Fashion-MNIST's test split in the training process.

Made by ``python -m helpers.models.shipped mini_alexnet mini_resnet mini_vit`` (the
quick profile's recipe, pinned training; a maintainer's command: the files go
into the package).
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

from ..pipeline import store
from .shipped_lm import FOLDER, TamperedWeightsError  # noqa: F401  one folder, one error for every shipped file


TRAINING_CODE = ("standins", "training")
"""The modules whose digest a record keeps: the networks' definitions and their training."""


def paths(model: str) -> tuple[Path, Path]:
    """``(checkpoint, record)`` of a stand-in."""
    return FOLDER / f"{model}.pt", FOLDER / f"{model}.json"


def has(model: str) -> bool:
    """Whether the package ships weights for ``model``."""
    return all(p.exists() for p in paths(model))


def record(model: str) -> dict:
    """The record of a stand-in's shipped weights.

    Raises
    ------
    FileNotFoundError
        When the package ships none for ``model`` (naming ``retrain=True``).
    """
    checkpoint, rec = paths(model)
    if not rec.exists() or not checkpoint.exists():
        raise FileNotFoundError(
            f"the package ships no weights for {model} ({checkpoint} or {rec} is missing); reinstall the "
            f"package, or train them here with -p retrain=True (make retrain MODEL={model}).")
    return store.read_json(rec, f"a reinstall of the package (its file {rec.name})")


def model_id(model: str) -> str:
    """The id of the shipped weights in every artifact key: ``sha256:<the checkpoint file's SHA-256>``."""
    return f"sha256:{record(model)['sha256']}"


def load_state(model: str) -> dict:
    """The shipped state dict of ``model``, after checking the file's SHA-256 against its record.

    Raises
    ------
    TamperedWeightsError
        When the file's bytes differ from the record's hash (changed, truncated or replaced).
    """
    checkpoint, _ = paths(model)
    rec = record(model)
    found = store.file_sha256(checkpoint)
    if found != rec["sha256"]:
        raise TamperedWeightsError(
            f"{checkpoint} is not the checkpoint its record names: its SHA-256 is {found[:16]}…, the record "
            f"({checkpoint.with_suffix('.json').name}) says {rec['sha256'][:16]}…. The file was changed or "
            f"damaged. Restore it (git checkout -- helpers/models/weights/{checkpoint.name} in a checkout, or reinstall "
            f"the package), or train your own weights with -p retrain=True (make retrain MODEL={model}).")
    return torch.load(checkpoint, map_location="cpu", weights_only=True)


def compare(model: str, weights_sha256: str, correct: int, recipe: dict) -> str:
    """One sentence: how retrained weights compare with the shipped ones (hash, accuracy, recipe)."""
    if not has(model):
        return f"the package ships no {model} weights to compare with"
    rec = record(model)
    same_recipe = {k: v for k, v in rec["recipe"].items() if k != "code"} == \
        {k: v for k, v in recipe.items() if k != "code"}
    shipped = f"{rec['test_correct']} of {rec['test_images']} ({100 * rec['test_accuracy']:.2f} %)"
    if not same_recipe:
        diffs = ", ".join(f"{k} {recipe.get(k)!r} (shipped: {rec['recipe'].get(k)!r})" for k in
                          sorted(set(recipe) | set(rec["recipe"])) if k != "code"
                          and recipe.get(k) != rec["recipe"].get(k))
        return f"trained with another recipe than the shipped {model} weights: {diffs}"
    same = weights_sha256 == rec["weights_sha256"]
    same_code = sorted((recipe.get("code") or {}).values()) == sorted(rec["recipe"].get("code", {}).values())
    code = "" if same_code else " (the training code has changed since)"
    return (f"{'the same weights, bit for bit,' if same else 'other weights'} than the shipped ones "
            f"({rec['weights_sha256'][:19]}…){code}; "
            f"test accuracy {correct} correct, shipped {shipped}")


def make(model: str) -> dict:
    """Train ``model`` with the quick profile's recipe (pinned) and write its checkpoint and record here."""
    from ..pipeline.settings import load_profile
    from .registry import builder
    from .running import state_hash
    from .training import checkpoint_key, train_pinned

    p = load_profile("quick", model=model, retrain=True)
    FOLDER.mkdir(exist_ok=True)
    checkpoint, rec_path = paths(model)
    with store.atomic(checkpoint) as tmp:
        result = train_pinned(p, tmp)
        net = builder(model)()
        net.load_state_dict(torch.load(tmp, map_location="cpu", weights_only=True))
        key = checkpoint_key(p)
    rec = {"model": model, "file": checkpoint.name, "sha256": store.file_sha256(checkpoint),
           "weights_sha256": state_hash(net), "recipe": recipe(key),
           "trained_with": {"torch": result["torch"], "threads": result["threads"], "cpu": cpu_name(),
                            "machine": platform.machine(), "environment": result["environment"]},
           "test_correct": result["test_correct"], "test_images": result["test_images"],
           "test_accuracy": result["test_accuracy"]}
    store.write_json(rec_path, rec)
    return rec


def recipe(key: dict) -> dict:
    """The recipe part of a record from a checkpoint's key: settings, training images, training code."""
    code = {k: v for k, v in key["code"].items() if any(k.endswith(f"/{m}.py") for m in TRAINING_CODE)}
    return {**key["params"], "images": key["inputs"]["images"], "code": code}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    models = list(argv or sys.argv[1:])
    if not models:
        print("usage: python -m helpers.models.shipped MODEL [MODEL ...]   (e.g. mini_alexnet mini_resnet mini_vit)",
              file=sys.stderr)
        return 2
    for model in models:
        rec = make(model)
        print(json.dumps({k: rec[k] for k in ("model", "sha256", "test_correct", "test_accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
