"""mini_gpt: the network against plain implementations, the shipped checkpoint and its record, pinned training."""
import hashlib
import math
import shutil

import pytest
import torch

from helpers.models import gpt, lm_training, shipped, shipped_lm
from helpers.models.running import state_hash
from helpers.text import corpus, tokens

TINY = {**lm_training.RECIPE, "vocab_size": 300, "d_model": 32, "n_layers": 1, "n_heads": 2, "d_mlp": 64,
        "steps": 3, "batch_size": 4, "warmup": 1}


def plain_attention(attn, x):
    """Causal multi-head attention written out: softmax(q kᵀ / √d_head + mask) v, head by head."""
    b, t, d = x.shape
    h = attn.n_heads
    q, k, v = attn.qkv(x).split(d, dim=-1)
    out = []
    for i in range(h):
        s = slice(i * d // h, (i + 1) * d // h)
        scores = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d // h)
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        out.append(scores.softmax(-1) @ v[..., s])
    return attn.proj(torch.cat(out, -1))


def test_the_network_is_causal_and_its_parts_are_the_plain_ones():
    torch.manual_seed(0)
    net = gpt.MiniGPT(vocab_size=50, length=12, d_model=16, n_layers=2, n_heads=4, d_mlp=24).eval()
    x = torch.randn(3, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.blocks[0].attn(x), plain_attention(net.blocks[0].attn, x))
        tokens_ = torch.randint(50, (3, 12))
        logits = net(tokens_)
        changed = tokens_.clone()
        changed[:, 7] = (changed[:, 7] + 1) % 50
        after = net(changed)
        torch.testing.assert_close(after[:, :7], logits[:, :7])  # no position sees a later token
        assert not torch.allclose(after[:, 7:], logits[:, 7:])
        # the neurons are fc's outputs, before the ReLU; the MLP is proj(relu(them))
        seen = {}
        handle = net.blocks[1].mlp.fc.register_forward_hook(lambda m, i, o: seen.update(fc=o))
        try:
            net(tokens_)
        finally:
            handle.remove()
        assert seen["fc"].shape == (3, 12, 24) and (seen["fc"] < 0).any()
        mlp = net.blocks[1].mlp
        h = torch.randn(5, 16)
        torch.testing.assert_close(mlp(h), mlp.proj(torch.relu(mlp.fc(h))))
    with pytest.raises(ValueError, match="longer than this model's length=12"):
        net(torch.zeros(1, 13, dtype=torch.long))


def test_the_shipped_checkpoint_is_its_records_to_the_last_token():
    """The files' SHA-256, the tensors' hash, and the held-out numbers measured here equal the record's; the
    tokenizer is the one the recipe trains from the fortunes' training split."""
    rec = shipped.record("mini_gpt")
    checkpoint, _ = shipped.paths("mini_gpt")
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == rec["sha256"]
    net, tokenizer, _ = lm_training.load_shipped()
    assert state_hash(net) == rec["weights_sha256"]
    recipe = {k: v for k, v in rec["recipe"].items() if k not in ("code", "corpus_identity")}
    assert recipe == lm_training.RECIPE
    assert rec["recipe"]["corpus_identity"] == {s: corpus.fortunes(s).identity() for s in corpus.SPLITS}
    assert set(rec["recipe"]["code"]) == {"helpers/models/causal_lm.py", "helpers/models/gpt.py",
                                          "helpers/models/lm_training.py", "helpers/models/shipped_lm.py",
                                          "helpers/text/corpus.py", "helpers/text/tokens.py"}
    retrained = tokens.train_tokenizer(corpus.fortunes("train").documents, recipe["vocab_size"])
    assert retrained.to_str() == tokenizer.to_str()
    numbers = lm_training.evaluate(net, lm_training.sequences(recipe, tokenizer, "test"))
    assert (numbers["test_correct"], numbers["test_tokens"]) == (rec["test_correct"], rec["test_tokens"])
    assert numbers["test_loss"] == pytest.approx(rec["test_loss"], rel=1e-6)
    # it learned: well below a uniform guess over the vocabulary, and far above chance at top-1
    assert rec["test_loss"] < 0.6 * math.log(recipe["vocab_size"]) and rec["test_accuracy"] > 0.15


def test_a_tampered_tokenizer_is_refused_with_the_fix(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    shutil.copytree(shipped.FOLDER, folder)
    monkeypatch.setattr(shipped, "FOLDER", folder)
    monkeypatch.setattr(shipped_lm, "FOLDER", folder)
    path = folder / "mini_gpt.tokenizer.json"
    path.write_text(path.read_text().replace('"<|endoftext|>"', '"<|end|>"', 1))
    with pytest.raises(shipped.TamperedWeightsError, match=r"mini_gpt.tokenizer.json is not the tokenizer its "
                                                           r"record names.*git checkout --"):
        lm_training.load_shipped()


def test_pinned_training_gives_the_same_weights_each_time(tmp_path):
    first = lm_training.train_pinned(tmp_path / "a.pt", TINY)
    again = lm_training.train_pinned(tmp_path / "b.pt", TINY)
    other = lm_training.train_pinned(tmp_path / "c.pt", {**TINY, "seed": 1})
    hashes = []
    for name in ("a", "b", "c"):
        net = lm_training.network(TINY)
        net.load_state_dict(torch.load(tmp_path / f"{name}.pt", weights_only=True))
        hashes.append(state_hash(net))
    assert hashes[0] == hashes[1] != hashes[2]
    assert first["test_loss"] == again["test_loss"] and first["threads"] == 2
    assert (tmp_path / "a.tokenizer.json").read_bytes() == (tmp_path / "b.tokenizer.json").read_bytes()
