# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Completeness by ablation (Fig. 6)
#
# Mean-ablate the top (or bottom) basis vectors of a layer — replace the
# pre-ReLU activation a by `a − V_S V_Sᵀ (a − mean)` at every position — and
# measure top-1 accuracy on the eval split, for PCs and neurons in descending
# and ascending order of variance. The network up to the layer (or up to the
# residual block / encoder layer that holds it) runs once per batch; only the
# rest runs per setting, settings stacked in the batch. The count grid is the paper's on the
# paper profile and a coarser one elsewhere (`ablation_dense`); the quick
# profile uses a seeded subset of `ablation_eval` eval images.
#
# Reads `data/<profile>/<model>/model/` and `bases/`; writes `data/<profile>/<model>/ablation/`,
# `figures/<profile>/<model>/ablation.csv` and `fig06_ablation.{png,pdf}`. An
# interrupted sweep resumes at the first unfinished layer.

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

from helpers import ablation, bases, models, plots, provenance, reference

# %%
net, info = models.load_model(p, train=False)
images, indices = provenance.selection(p, "ablation")
bases_meta, bases_key = provenance.require(p, "bases"), provenance.expected(p, "bases")
fitted = {layer: bases.layer_bases(p.artifact("bases"), layer, p.bases, bases_key) for layer in p.layers}

# %%
rows = ablation.sweep(
    net, images, p.layers, fitted, p.artifact("ablation"), dense=p.ablation_dense,
    indices=indices, model_id=info["id"], bases_hash=bases_meta["hash"], skip_bad=p.skip_bad_images,
    batch_size=p.batch_size, num_workers=p.num_workers, device=p.device, profile=p.name,
)
table = pd.DataFrame(rows)
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("ablation.csv"), index=False)
original = table[table.n_ablated == 0].top1.iloc[0]
print(f"original top-1 accuracy on {len(indices)} eval images: {100 * original:.2f} %")
if reference.applies(p.model):
    print(f"the paper's (torchvision AlexNet, ImageNet val): {100 * reference.ALEXNET_TOP1:.2f} %")

# %%
fig = plots.ablation(table)
plots.save(fig, p.figure("fig06_ablation"))
provenance.record_outputs(p, "05_ablation", ["fig06_ablation.png", "fig06_ablation.pdf", "ablation.csv"],
                          ["ablation"])

# %% [markdown]
# Accuracy after ablating the top 1, 4 and 16 basis vectors of each basis:

# %%
top = table[(table.order == "descending") & table.n_ablated.isin([1, 4, 16])]
top.pivot_table(index="layer", columns=["basis", "n_ablated"], values="top1", sort=False)
