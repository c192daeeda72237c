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
# Overrides of the profile (helpers/config.py); None keeps the profile's value.
dataset = None
data_root = None  # ImageNet folder with train/ and val/ (paper profile)
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
sample_split = None
eval_split = None
n_sample = None
n_eval = None
retrain = None  # True: train the stand-in here instead of using its shipped weights
train_epochs = None
train_limit = None
batch_size = None
num_workers = None
seed = None
device = None  # "cuda", "cpu"; None: CUDA when available
pca_chunk = None
index_cap = None
index_kind = None  # "flat" (exact) or "ivf"
nlist = None
nprobe = None
n_targets = None
n_neighbours = None
thumb = None
token_margin = None  # ViT: patches of context around a token's patch
n_show = None
n_study = None
ablation_eval = None
ablation_dense = None
concepts = None  # 08: "fashion" (Fashion-MNIST annotator) | "broden"; None: "auto"
broden_root = None  # 08: Broden folder (index.csv, label.csv, images/)
broden_subset = None  # 08: e.g. "ade20k" (default) or "all"
broden_categories = None  # 08: e.g. "object,part,scene,texture,color"
mask_size = None  # 08: mask side (Broden only); None: Broden's own
n_probe = None  # 08: probe images (seeded subset); quick: 2000
quantile = None  # 08: a unit fires at its top quantile (0.005)
beam = None
max_length = None
candidates = None  # 08: "all" (every concept, the reference's) | "firing" (a speed option)
formula_search = None  # 08: "beam" (the reference's) | "optimal" (certified, max_length <= 3)
n_explain = None  # 08: units per basis and layer; None: n_study
explain_all_neurons = None
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
ica_components = None
nmf_components = None
sae_latents = None  # None: 4·d
sae_k = None
sae_epochs = None
skip_bad_images = None  # True: skip unreadable images (listed in the sidecars)
data_dir = None
figures_dir = None

# %%
from helpers import config

p = config.load_profile(profile, **{k: globals()[k] for k in config.SETTINGS})
p

# %%
import logging

import pandas as pd

from helpers import bases, models, provenance, sampling, search

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

# %%
net, info = models.load_model(p, train=False)
images, indices = provenance.selection(p, "eval")
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
)
pd.DataFrame([{"layer": k, "output shape": tuple(v), "indexed vectors": meta["vectors"][k]}
              for k, v in meta["shapes"].items()])
