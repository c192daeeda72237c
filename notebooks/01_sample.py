# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Sample each layer's activations
#
# Step 1 of the method (paper §3.1): forward every image of the sample split
# through the network and keep, for every studied layer, one activation vector
# per image, the layer module's own output (pre-ReLU) — for a conv map at one
# seeded random spatial position, for a ViT at one seeded random patch token,
# stored with its `(image, y, x)`. How a network's layers are read is asked of
# its family (`helpers/architectures.py`). A stand-in network (`mini_alexnet`,
# `mini_resnet` or `mini_vit`) comes with the weights that ship with the package
# (their hash checked against their record, `helpers/weights/`); with
# `retrain=True` (the `smoke` profile's default) it is trained here first.
#
# Writes `data/<profile>/<model>/model/` (stand-in with `retrain=True` only) and `data/<profile>/<model>/sample/`.
# An interrupted run resumes where it stopped.

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
import pandas as pd

from helpers import models, provenance, sampling

# %% [markdown]
# ## The network

# %%
net, info = models.load_model(p)
accuracy = f", test accuracy {100 * info['test_accuracy']:.2f} %" if "test_accuracy" in info else ""
print(f"{info['name']} ({info['family']} family){accuracy}; weights {info['id'][:40]}…"
      + (f" ({info['weights']})" if "weights" in info else ""))
if info.get("compared"):
    print(f"retrained: {info['compared']}")

# %% [markdown]
# ## One forward pass per batch, all layers captured pre-ReLU

# %%
images, indices = provenance.selection(p, "sample")
meta = sampling.sample_activations(
    net, images, p.layers, p.artifact("sample"),
    indices=indices, seed=p.seed, model_id=info["id"], skip_bad=p.skip_bad_images,
    batch_size=p.batch_size, num_workers=p.num_workers, device=p.device, profile=p.name,
)
if meta["bad_images"]:
    print(f"{len(meta['bad_images'])} unreadable image(s) skipped, e.g. {meta['bad_images'][0]['path']}")
pd.DataFrame([{"layer": k, "output shape": tuple(v), "samples": meta["files"][f"{k}.npy"]["shape"][0]}
              for k, v in meta["shapes"].items()])
