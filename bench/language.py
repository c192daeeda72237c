"""A language model's throughput in the steps, and the time of 01-05 on the quick profile projected from it.

    python bench/language.py                              # mini_gpt, GPT-2 small and Pythia-70M shapes, CPU
    python bench/language.py --models gpt2 --device cuda  # on a GPU

Every network but ``mini_gpt`` is its hub configuration with random weights (``from_config``: nothing is
downloaded; the time of a forward does not depend on the weights). For each, tokens per second of:

- "bare forward": ``model(x)`` with its logits, what the ablation sweep (05) runs per setting;
- "01, every site in one pass": :func:`helpers.sampling.capture` of every block's MLP site, the forward
  stopped after the last one, as 01 and 03 read them;
- "a hook per site": one forward per site, each with one hook (as reading the sites one at a time does);

the ratios, and the tokens each step forwards on the quick profile (the fortunes, ``n_sample``: every
training sequence; 03: every test sequence; 05: 256 sequences per setting, three bases, both orders,
the count grid of each layer) with the time they take at the rates measured.
"""
from __future__ import annotations

import argparse
import time

import torch

from helpers.ablation.accuracy import count_grid
from helpers.models import causal_lm, shipped_lm
from helpers.models.sites import sites as layer_sites
from helpers.sampling import capture, forward_until

TRAIN_TOKENS, TEST_TOKENS = 852_544, 93_824
"""Tokens of the fortunes' splits packed by mini_gpt's tokenizer (13,321 and 1,466 sequences of 64); a hub
tokenizer's counts are of the same order."""


def network(name: str):
    """``(model, sequence length)``: the shipped mini_gpt, or a hub configuration with random weights."""
    import transformers

    if name == "mini_gpt":
        model = shipped_lm.network(shipped_lm.record()["recipe"])
        return model.eval(), 64
    configs = {
        "gpt2": lambda: transformers.GPT2Config(),
        "pythia-70m": lambda: transformers.GPTNeoXConfig(hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                                                         intermediate_size=2048, vocab_size=50304, rotary_pct=0.25,
                                                         max_position_embeddings=2048),
    }
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(configs[name]()).eval(), 128


def rate(fn, tokens: int, repeat: int) -> float:
    """Tokens per second of ``fn`` (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        with torch.no_grad():
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mini_gpt,gpt2,pythia-70m")
    parser.add_argument("--batch", type=int, default=16, help="sequences per forward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}")
    for name in args.models.split(","):
        model, length = network(name)
        model.to(device)
        x = torch.randint(100, (args.batch, length), generator=torch.Generator().manual_seed(0)).to(device)
        paths = causal_lm.mlp_sites(model)
        sites = layer_sites(model, paths, x[0].cpu())
        tokens = x.numel()

        def every_site():
            with capture(model, sites, stop_after=paths[-1]):
                forward_until(model, x)

        def hook_per_site():
            for path in paths:
                with capture(model, {path: sites[path]}, stop_after=path):
                    forward_until(model, x)

        bare = rate(lambda: model(x), tokens, args.repeat)
        one = rate(every_site, tokens, args.repeat)
        each = rate(hook_per_site, tokens, args.repeat)
        d = sites[paths[0]].shape[0]
        counts = len(count_grid(d, False)) + 2  # and the 80 %/99 % counts
        forwards = len(paths) * 3 * (2 * (counts - 1)) + 1
        sweep = forwards * 256 * (length - 1) * 64 / 63  # tokens of the sequences, logits for all but the last
        plan = {"01": TRAIN_TOKENS / one, "03": TEST_TOKENS / one, "05": sweep / bare}
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, {len(paths)} blocks, "
              f"d = {d}; tokens/s: bare forward {bare:,.0f}, 01 every site in one pass {one:,.0f} "
              f"({one / bare:.2f} x the bare forward), a hook per site {each:,.0f} (one pass is {one / each:.1f} x "
              f"faster); quick profile: 01 {plan['01'] / 60:.1f} min, 03 {plan['03'] / 60:.1f} min, 05 "
              f"({forwards} forwards of 256 sequences) {plan['05'] / 3600:.2f} h")


if __name__ == "__main__":
    main()
