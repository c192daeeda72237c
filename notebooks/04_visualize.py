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
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>" | language models: "mini_gpt" | "hf:<name>[:untrained]"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
eval_split = None  # the split the index, ablation and 08 read
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
n_show = None  # grids drawn per basis and layer
n_study = None  # grids saved per basis and layer (the study's stimuli)
n_targets = None  # points along a basis vector (grid columns)
n_neighbours = None  # patches per point (grid rows)
nprobe = None  # IVF: lists probed per query
thumb = None  # patch thumbnail side (pixels)
token_margin = None  # ViT: patches of context around a token's patch
adjacent_repeats = None  # "allow" (the paper's) | "patch" | "image" (none in two adjacent columns) | "grid" (none twice)
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, eval_split=eval_split, bases=bases, n_show=n_show,
    n_study=n_study, n_targets=n_targets, n_neighbours=n_neighbours, nprobe=nprobe, thumb=thumb,
    token_margin=token_margin, adjacent_repeats=adjacent_repeats, seed=seed, device=device, data_dir=data_dir,
    figures_dir=figures_dir,
)
p

# %%
import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from helpers import explorer, grids, plots
from helpers.pipeline import provenance

# %% [markdown]
# ## The top basis vectors of every layer
#
# The grids of the top `max(n_show, n_study)` vectors of each basis are saved
# (reused while the sample, bases, index and grid settings are the same); the
# figures show the top `n_show`.

# %%
provenance.ensure_reads(p, "04")
meta = grids.make_grids(p)
vis = grids.visualizer_for(p)
for layer in tqdm(p.layers, desc="figures per layer"):
    shown = grids.saved_grids(vis, p.artifact("grids"), layer, p.n_show)
    fig = plots.basis_grids(layer, shown)
    plots.save(fig, p.figure(f"fig_grids_{layer}"))
    if layer != p.layers[0]:
        plt.close(fig)

# %% [markdown]
# ## Fig. 12: distance minimisation vs activation maximisation

# %%
fig = plots.toy_distance_vs_activation(grids.toy_example(seed=p.seed))
plots.save(fig, p.figure("fig12_toy_distance_vs_activation"))
provenance.record_outputs(p, "04")

# %% [markdown]
# ## Explorer
#
# Any profile with artifacts, any layer, either basis, any component (1 = highest
# variance). Needs a live kernel (JupyterLab); under papermill it is only built.

# %%
explorer.explorer(profile=p)
