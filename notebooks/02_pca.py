# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Bases and completeness by explained variance (Fig. 5)
#
# Step 2 of the method: the principal components of each layer's sample
# (centred, exact, from a streamed float64 covariance) and the neuron basis,
# both ordered by variance — and, with the setting `bases`, the bases the
# paper names as future work: ICA (PCA-whitened FastICA), NMF of the
# post-ReLU activations and a TopK sparse autoencoder, ordered by the share
# of the variance each vector's reconstruction carries. Fig. 5 plots, for
# every basis, the variance explained when reconstructing with the top k
# vectors only (for PCs: the cumulative explained-variance ratio), with the
# counts for 80 % and 99 %; PCA post-ReLU is the PCA of the ReLU of the same
# vectors.
#
# Reads `data/<profile>/<model>/sample/`; writes `data/<profile>/<model>/bases/`,
# `figures/<profile>/<model>/fig05_explained_variance.{png,pdf}` and
# `figures/<profile>/<model>/explained_variance_counts.csv`.

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
from helpers import bases, plots, provenance, reference

# %%
meta = bases.fit_layer_bases(p.artifact("sample"), p.artifact("bases"), p.layers, chunk_size=p.pca_chunk,
                             profile=p.name, sample_key=provenance.expected(p, "sample"), kinds=p.bases,
                             settings=bases.learned_settings(p), device=p.device)
table, curves = bases.explained_variance_table(p.artifact("bases"), p.layers,
                                               key=provenance.expected(p, "bases"))
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("explained_variance_counts.csv"), index=False)
table.pivot(index="layer", columns="curve", values=["k80", "k99"]).loc[list(p.layers)].astype("Int64")

# %%
fig = plots.explained_variance(curves)
plots.save(fig, p.figure("fig05_explained_variance"))
provenance.record_outputs(p, "02_pca", ["fig05_explained_variance.png", "fig05_explained_variance.pdf",
                                        "explained_variance_counts.csv"], ["bases"])

# %% [markdown]
# On the paper profile, the reproduced counts beside the paper's (Fig. 5 labels):

# %%
if reference.applies(p.model):
    display(reference.counts_beside_paper(table))
