"""What moves when the shipped weights run in other numerical environments (thread counts, CPU kernels).

    python bench/environments.py                      # mini_alexnet, quick profile, 01 02 05 08
    python bench/environments.py --model mini_resnet

Training is out of the picture (every run loads the shipped checkpoint); what
is left to differ across machines is the float rounding of everything after
it. Each environment runs the quick profile's 01, 02, 05 and 08 through the
runner in a fresh process, into a folder of its own, and the results are
compared with the first environment's (the machine's defaults): the sampled
activations (largest difference relative to the layer's largest value), the
80 %/99 % counts, every accuracy of the ablation sweep, every compositional
formula and IoU, and the 10,000 test predictions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {
    "defaults (2 threads, the CPU's best kernels)": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "AVX2 kernels (as on an AVX2-only CPU)": {"ATEN_CPU_CAPABILITY": "avx2"},
    "oneDNN off, AVX2, 1 thread": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1", "HELPERS_MKLDNN": "0"},
}

PREDICT = """
import sys, json, os, torch
if os.environ.get("HELPERS_MKLDNN") == "0":
    torch.backends.mkldnn.enabled = False
from helpers import models
from helpers.pipeline.settings import load_profile
p = load_profile("quick", model=sys.argv[1])
net, _ = models.load_model(p, device="cpu")
test = models.load_dataset(p, "test")
preds = []
with torch.no_grad():
    for start in range(0, len(test), 500):
        x = torch.stack([test[i][0] for i in range(start, min(start + 500, len(test)))])
        preds += net(x).argmax(1).tolist()
print(json.dumps(preds))
"""

SITE = """
import os, torch
if os.environ.get("HELPERS_MKLDNN") == "0":
    torch.backends.mkldnn.enabled = False
"""


def run(model: str, env: dict, folder: Path) -> dict:
    """Run 01 02 05 08 in ``env`` into ``folder``; returns the outputs to compare and the seconds taken."""
    site = folder / "site"
    site.mkdir(parents=True)
    (site / "sitecustomize.py").write_text(SITE)  # oneDNN off in the kernels too
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    dirs = [f"data_dir={folder / 'data'}", f"figures_dir={folder / 'figures'}"]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "helpers.run", "--profile", "quick", "--only", "01", "02", "05", "08",
                    "-p", f"model={model}", *(a for d in dirs for a in ("-p", d))],
                   env=environ, check=True, cwd=ROOT, capture_output=True)
    seconds = time.perf_counter() - t
    preds = subprocess.run([sys.executable, "-c", PREDICT, model], env=environ, check=True, cwd=ROOT,
                           capture_output=True, text=True).stdout
    data, figures = folder / "data" / model, folder / "figures" / model
    sample = {f.stem: np.load(f, mmap_mode="r") for f in (data / "sample").glob("*.npy") if "_loc" not in f.stem}
    return {"seconds": seconds, "sample": sample,
            "counts": pd.read_csv(figures / "explained_variance_counts.csv"),
            "ablation": pd.read_csv(figures / "ablation.csv"),
            "formulas": pd.read_csv(figures / "compositional_explanations.csv", keep_default_na=False),
            "predictions": np.array(json.loads(preds.strip().splitlines()[-1]))}


def compare(a: dict, b: dict) -> dict:
    sample = max(float(np.abs(np.asarray(a["sample"][k], np.float64) - b["sample"][k]).max()
                       / max(float(np.abs(a["sample"][k]).max()), 1e-30)) for k in a["sample"])
    ca, cb = a["counts"], b["counts"]
    counts = int(((ca.k80 != cb.k80) | (ca.k99 != cb.k99)).sum())
    top1 = np.abs(a["ablation"].top1.to_numpy() - b["ablation"].top1.to_numpy())
    fa, fb = a["formulas"], b["formulas"]
    return {"sample rel. diff": f"{sample:.1e}", "count pairs moved": f"{counts} of {len(ca)}",
            "sweep accuracies moved": f"{int((top1 > 0).sum())} of {len(top1)} (max {top1.max():.4f})",
            "formulas moved": f"{int((fa.formula != fb.formula).sum())} of {len(fa)}",
            "max IoU diff": f"{float(np.abs(fa.iou - fb.iou).max()):.1e}",
            "test predictions moved": f"{int((a['predictions'] != b['predictions']).sum())} of "
                                      f"{len(a['predictions'])}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini_alexnet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for i, (name, env) in enumerate(ENVIRONMENTS.items()):
            results[name] = run(args.model, env, Path(tmp) / str(i))
            print(f"ran {name}: {results[name]['seconds']:.0f} s", flush=True)
        first = next(iter(results.values()))
        rows = [{"environment": name, "01 02 05 08 s": f"{r['seconds']:.0f}",
                 **({"sample rel. diff": "—"} if r is first else compare(first, r))} for name, r in results.items()]
    print(f"\nquick profile, {args.model} (shipped weights), compared with the first environment:\n")
    columns = list(rows[-1])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "—")) for c in columns) + " |")


if __name__ == "__main__":
    main()
