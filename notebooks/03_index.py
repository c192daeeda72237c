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
# The settings this step reads (None keeps the profile's value). Any other setting reaches it too, from the
# runner or papermill (-p name=value): see docs/notebooks.md.
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
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

# %%
from helpers import pipeline

p = pipeline.given(profile, globals())
p

# %%
import logging

import pandas as pd

from helpers import bases, models, sampling, search
from helpers.pipeline import distributed, provenance

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

# %%
net, info = models.load_model(p, train=False)
images, indices = models.selection(p, "eval")
bases_meta, bases_key = provenance.require(p, "bases"), provenance.expected(p, "bases")
means = {layer: bases.load_basis(p.artifact("bases"), layer, key=bases_key).mean_ for layer in p.layers}
train = sample_hash = None
if p.index_kind == "ivf":  # the quantiser is trained on the sample
    sample_key = provenance.expected(p, "sample")
    train = {layer: sampling.open_sample(p.artifact("sample"), layer, sample_key)[0] for layer in p.layers}
    sample_hash = provenance.require(p, "sample")["hash"]

meta = search.index_activations(
    net, images, p.layers, means, p.artifact("index"),
    indices=indices, cap=p.index_cap, kind=p.index_kind, nlist=p.nlist, train=train, seed=p.seed,
    batch_size=p.batch_size, num_workers=p.num_workers, device=p.device, model_id=info["id"],
    bases_hash=bases_meta["hash"], sample_hash=sample_hash, skip_bad=p.skip_bad_images, profile=p.name,
    ranks=distributed.ranks(p),
)
pd.DataFrame([{"layer": k, "output shape": tuple(v), "indexed vectors": meta["vectors"][k]}
              for k, v in meta["shapes"].items()])
