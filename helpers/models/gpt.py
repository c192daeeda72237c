"""``mini_gpt``: a small GPT-style language model with ReLU MLPs, the text stand-in.

GPT-2's block at a CPU's scale: token and learned position embeddings, ``n_layers`` pre-norm blocks
(causal multi-head self-attention, then an MLP ``fc`` → ReLU → ``proj``, each added to the residual
stream), a final layer norm and an output layer tied to the token embedding. A block's MLP hidden
layer is read at ``blocks.<i>.mlp.fc``: the output of ``fc``, the hidden units *before* the ReLU
(``d_mlp`` of them), as the vision stand-ins are read before their ReLUs; ``blocks.<i>`` is the
residual stream after block ``i``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    """Causal multi-head self-attention: ``qkv`` (d → 3d), heads of ``d / n_heads``, ``proj`` (d → d)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} does not split into n_heads={n_heads} heads; give a divisor.")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """``fc`` (d → d_mlp), ReLU, ``proj`` (d_mlp → d): the neurons are ``fc``'s outputs."""

    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.fc = nn.Linear(d_model, d_mlp)
        self.act = nn.ReLU()
        self.proj = nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MiniGPT(nn.Module):
    """A causal language model: tokens ``(batch, length)`` → next-token logits ``(batch, length, vocab_size)``.

    Parameters
    ----------
    vocab_size : int
    length : int
        The longest sequence (learned position embeddings).
    d_model, n_layers, n_heads, d_mlp : int
        Residual width, blocks, attention heads, MLP hidden units per block.
    """

    def __init__(self, vocab_size: int = 2048, length: int = 64, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, d_mlp: int = 512):
        super().__init__()
        self.length = length
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(length, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled by the depth
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / (2 * n_layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.length:
            raise ValueError(f"a sequence of {t} tokens is longer than this model's length={self.length}; "
                             "cut the text into sequences of at most that many tokens.")
        x = self.embed(tokens) + self.position(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.embed.weight.T  # the output layer is the token embedding
