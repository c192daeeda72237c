# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Index the patch activations (FAISS)
#
# Step 3 of the method (paper §3.3): for each layer, the pre-ReLU activation
# vectors at every spatial position of the eval images (or a seeded subsample
# of `index_cap` positions per layer), centred with the sample mean, in a FAISS
# index — exact `IndexFlatL2` by default, `IndexIVFFlat` with
# `index_kind="ivf"` — with each vector's `(image, y, x)`. FAISS runs on a GPU
# when it has one; the log says which backend.
#
# Reads `data/<profile>/<model>/model/`, `bases/` (means), `sample/` (IVF training);
# writes `data/<profile>/<model>/index/`.

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>" | language models: "mini_gpt" | "hf:<name>[:untrained]"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
eval_split = None  # the split the index, ablation and 08 read
n_eval = None  # eval images (a seeded subset); None: the whole split
index_kind = None  # "flat" (exact) or "ivf"
index_cap = None  # eval positions indexed per layer (a seeded subsample); None: all
nlist = None  # IVF: lists
batch_size = None  # images per forward pass
num_workers = None  # DataLoader workers for image folders
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
skip_bad_images = None  # True: skip unreadable images (listed in the sidecars)
nproc = None  # processes on this machine (one per GPU); >1: torch.distributed ranks, the same index
nnodes = None  # machines taking part (torchrun's --nnodes)
node_rank = None  # this machine's place among them (torchrun's --node-rank)
rdzv_endpoint = None  # "host:port" of machine 0 (torchrun's --rdzv-endpoint)
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, bases=bases, eval_split=eval_split, n_eval=n_eval,
    index_kind=index_kind, index_cap=index_cap, nlist=nlist, batch_size=batch_size, num_workers=num_workers,
    seed=seed, device=device, skip_bad_images=skip_bad_images, nproc=nproc, nnodes=nnodes,
    node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
import logging

import pandas as pd

from helpers import search
from helpers.pipeline import provenance

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

# %%
provenance.ensure_reads(p, "03")
meta = search.make_index(p)  # vectors centred with the PCA means; an IVF quantiser trained on the sample
pd.DataFrame([{"layer": k, "output shape": tuple(v), "indexed vectors": meta["vectors"][k]}
              for k, v in meta["shapes"].items()])
