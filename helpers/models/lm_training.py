"""Training ``mini_gpt`` on Debian's fortunes, reproducibly, and its shipped checkpoint.

The recipe (:data:`RECIPE`) is pinned: a byte-level BPE of 2,048 tokens trained on the fortunes'
training split (:mod:`helpers.text`), sequences of 64 tokens, AdamW with a warm-up and a cosine
decay, seeded batches. Training runs in a child process with the vision stand-ins' pinned numerical
environment (:mod:`helpers.models.training`: AVX2 kernels, MKL's strict mode, deterministic
algorithms, two threads), so the same recipe gives the same weights, bit for bit, on one PyTorch
version and any x86-64 CPU with AVX2.

The package ships ``weights/mini_gpt.pt`` (the state dict), ``weights/mini_gpt.tokenizer.json`` and
``weights/mini_gpt.json``, the record: both files' SHA-256, the tensors' hash, the recipe with the
training code's digests and the corpus' identity, the machine, and the held-out numbers measured in the
training process — next-token top-1 (``test_correct`` of ``test_tokens``) and mean cross-entropy
(``test_loss``, nats per token) over every position of the test split's sequences.

    python -m helpers.models.lm_training            # retrain here; prints how it compares with the shipped
    python -m helpers.models.lm_training --ship     # a maintainer's command: write the shipped files
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..pipeline import store
from ..pipeline.keys import code_digest
from ..pipeline.settings import ROOT
from ..text import corpus, tokens
from . import shipped, shipped_lm
from .shipped_lm import network  # noqa: F401  lm_training.network, as the recipe says
from .causal_lm import next_token
from .running import state_hash
from .training import PINNED_ENV, THREADS, run_child

MODEL = "mini_gpt"

RECIPE = {"corpus": "fortunes", "vocab_size": 2048, "length": 64, "d_model": 128, "n_layers": 4, "n_heads": 4,
          "d_mlp": 512, "steps": 1200, "batch_size": 32, "lr": 3e-3, "warmup": 50, "weight_decay": 0.01, "seed": 0}
"""The shipped network's recipe; ``steps`` and the rest may be changed for a network of one's own."""

CODE = ("models.causal_lm", "models.gpt", "models.lm_training", "models.shipped_lm", "text.corpus", "text.tokens")
"""The modules that define the network, its data, its training and its evaluation: their digests go into the
record."""


def sequences(recipe: dict, tokenizer, split: str) -> torch.Tensor:
    """The split's packed sequences, ``(n, length)`` int64 (memory: 8 bytes per token of the split)."""
    documents = corpus.fortunes(split).documents
    return torch.from_numpy(tokens.pack(documents, tokenizer, recipe["length"])).long()


def evaluate(model, data: torch.Tensor) -> dict:
    """The record's held-out numbers: next-token top-1 and mean cross-entropy at every position of ``data``
    ``(n, length)`` but the last (:func:`helpers.models.causal_lm.next_token`).

    Returns ``{"test_correct", "test_tokens", "test_loss"}``.
    """
    found = next_token(model, data, batch_size=256)
    return {"test_correct": found["correct"], "test_tokens": found["tokens"], "test_loss": found["loss"]}


def _rate(recipe: dict, step: int) -> float:
    """Linear warm-up to ``lr``, then a cosine to a tenth of it at the last step."""
    if step < recipe["warmup"]:
        return recipe["lr"] * (step + 1) / recipe["warmup"]
    done = (step - recipe["warmup"]) / max(1, recipe["steps"] - recipe["warmup"])
    return recipe["lr"] * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))


def train(recipe: dict = RECIPE):
    """Train ``mini_gpt`` in this process: ``(model, tokenizer, held-out numbers)``.

    Reproducible across machines only inside :func:`train_pinned`. Memory: the training split's tokens
    (8 bytes each) and one batch's activations.
    """
    tokenizer = tokens.train_tokenizer(corpus.fortunes("train").documents, recipe["vocab_size"])
    train_data = sequences(recipe, tokenizer, "train")
    torch.manual_seed(recipe["seed"])
    model = network(recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    order = torch.Generator().manual_seed(recipe["seed"])
    model.train()
    for step in tqdm(range(recipe["steps"]), desc=f"train {MODEL}"):
        for group in opt.param_groups:
            group["lr"] = _rate(recipe, step)
        batch = train_data[torch.randint(len(train_data), (recipe["batch_size"],), generator=order)]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tokenizer, evaluate(model, sequences(recipe, tokenizer, "test"))


def train_pinned(out, recipe: dict = RECIPE) -> dict:
    """Train in a child process with the pinned environment; write ``out`` (.pt) and ``out``.tokenizer.json.

    Returns the held-out numbers, the torch version, threads and environment.
    """
    env = {**os.environ, **PINNED_ENV, "OMP_NUM_THREADS": str(THREADS),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return run_child(["helpers.models.lm_training", "--child", json.dumps(recipe), str(out)], env, MODEL)


def _child(recipe: dict, out: Path) -> dict:
    torch.backends.mkldnn.enabled = False
    torch.use_deterministic_algorithms(True)
    model, tokenizer, numbers = train(recipe)
    torch.save(model.state_dict(), out)
    tokenizer.save(str(out.with_suffix(".tokenizer.json")))
    return {**numbers, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "environment": {**{k: os.environ.get(k) for k in PINNED_ENV}, "mkldnn": False, "device": "cpu"}}


def record(checkpoint: Path, recipe: dict, result: dict) -> dict:
    """The record of a checkpoint (and its tokenizer beside it) trained with ``recipe``."""
    net = network(recipe)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return {"model": MODEL, "file": checkpoint.name, "sha256": store.file_sha256(checkpoint),
            "tokenizer": {"file": f"{MODEL}.tokenizer.json",
                          "sha256": store.file_sha256(checkpoint.with_suffix(".tokenizer.json"))},
            "weights_sha256": state_hash(net),
            "recipe": {**recipe, "corpus_identity": {s: corpus.fortunes(s).identity() for s in corpus.SPLITS},
                       "code": code_digest(CODE)},
            "trained_with": {"torch": result["torch"], "threads": result["threads"], "cpu": shipped.cpu_name(),
                             "machine": platform.machine(), "environment": result["environment"]},
            **{k: result[k] for k in ("test_correct", "test_tokens", "test_loss")},
            "test_accuracy": result["test_correct"] / result["test_tokens"]}


def load_shipped():
    """The shipped ``(model, tokenizer, record)``, both files checked against the record's SHA-256.

    Raises
    ------
    TamperedWeightsError
        When the checkpoint or the tokenizer is not the file its record names.
    """
    rec = shipped.record(MODEL)
    state = shipped.load_state(MODEL)
    tokenizer = shipped_lm.tokenizer(MODEL)
    net = network(rec["recipe"])
    net.load_state_dict(state)
    return net.eval(), tokenizer, rec


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--child"]:
        print(json.dumps(_child(json.loads(args[1]), Path(args[2]))))
        return 0
    ship = "--ship" in args
    folder = shipped.FOLDER if ship else Path(os.environ.get("TMPDIR", "/tmp")) / f"{MODEL}-retrained"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / f"{MODEL}.pt"
    rec = record(checkpoint, RECIPE, train_pinned(checkpoint))
    if ship:
        store.write_json(folder / f"{MODEL}.json", rec)
    else:
        before = shipped.record(MODEL)
        same = rec["weights_sha256"] == before["weights_sha256"]
        code = "" if rec["recipe"]["code"] == before["recipe"]["code"] else " (the training code has changed since)"
        print(f"{'the same weights, bit for bit, as' if same else 'other weights than'} the shipped {MODEL} "
              f"({before['weights_sha256'][:19]}…){code}; held-out loss {rec['test_loss']:.6f} (shipped "
              f"{before['test_loss']:.6f}), top-1 {rec['test_correct']} of {rec['test_tokens']} (shipped "
              f"{before['test_correct']}); files in {folder}")
    print(json.dumps({k: rec[k] for k in ("sha256", "test_loss", "test_correct", "test_tokens", "test_accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
