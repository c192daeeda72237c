# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Visualise points along basis vectors (Figs. 2–4, 16–20, 12)
#
# Step 4 of the method: for a basis vector v, `n_targets` points `mean + t·v`
# with t evenly spaced from the smallest to the largest projection of the
# sample on v; for each, the `n_neighbours` nearest patches (receptive-field
# crops, padded at the image edge). Columns are targets from low to high, rows
# are neighbours. The per-layer figures show the top `n_show` PCs beside the
# top `n_show` neurons; Fig. 12 is the toy contrast of distance minimisation
# with activation maximisation. At the end, an explorer for any basis vector.
#
# Reads `data/<profile>/<model>/` `model/`, `sample/`, `bases/`, `index/`; writes
# `data/<profile>/<model>/grids/<layer>/<basis>_<component>.png` (the top
# `max(n_show, n_study)` of each basis: 06 turns them into study stimuli),
# `figures/<profile>/<model>/fig_grids_<layer>.{png,pdf}` and
# `fig12_toy_distance_vs_activation.{png,pdf}`.

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
import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from helpers import explorer, plots, provenance, visualize

# %% [markdown]
# ## The top basis vectors of every layer
#
# The grids of the top `max(n_show, n_study)` vectors of each basis are saved
# (reused while the sample, bases, index and grid settings are the same); the
# figures show the top `n_show`.

# %%
vis = explorer.visualizer_for(p)
meta = visualize.make_grids(vis, p.artifact("grids"), provenance.expected(p, "grids"),
                            max(p.n_show, p.n_study), profile=p.name)
for layer in tqdm(p.layers, desc="figures per layer"):
    shown = visualize.saved_grids(vis, p.artifact("grids"), layer, p.n_show)
    fig = plots.basis_grids(layer, shown)
    plots.save(fig, p.figure(f"fig_grids_{layer}"))
    if layer != p.layers[0]:
        plt.close(fig)
provenance.record_outputs(p, "04_visualize", [f"fig_grids_{layer}.{ext}" for layer in p.layers
                                              for ext in ("png", "pdf")], ["grids", "bases"])

# %% [markdown]
# ## Fig. 12: distance minimisation vs activation maximisation

# %%
fig = plots.toy_distance_vs_activation(visualize.toy_example(seed=p.seed))
plots.save(fig, p.figure("fig12_toy_distance_vs_activation"))

# %% [markdown]
# ## Explorer
#
# Any profile with artifacts, any layer, either basis, any component (1 = highest
# variance). Needs a live kernel (JupyterLab); under papermill it is only built.

# %%
explorer.explorer(profile=p)
