# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
# The user-study app alone, as participants see it: `make study` (or
# `python -m helpers.study_app --profile quick`) serves this notebook with Voila,
# code hidden, after injecting these parameters. 06_user_study makes the stimuli.
# (No markdown here: Voila would show it to participants.)
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
min_rt_ms = 200  # answers faster than this after a trial appears are ignored

# %%
from helpers import config, study_app

p = config.load_profile(profile, **{k: globals()[k] for k in config.SETTINGS})
study_app.app(p, min_rt_ms=min_rt_ms)
