# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
# The user-study app alone, as participants see it: `make study` (or
# `python -m helpers.study.app --profile quick`) serves this notebook with Voila,
# code hidden, after injecting these parameters. 06_user_study makes the stimuli.
# (No markdown here: Voila would show it to participants.)
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings the app reads (None keeps the profile's value); any other one by name in `settings`.
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
n_study = None  # grids saved per basis and layer (the study's stimuli)
seed = None  # every seeded choice (subsets, shuffles, learned bases)
data_dir = None  # artifacts' folder; None: data/<profile>
settings = {}  # other settings by name (the stimuli's grids' settings, e.g. {"n_targets": 8})
min_rt_ms = 200  # answers faster than this after a trial appears are ignored

# %%
from helpers import pipeline
from helpers.study import app as study_app

p = pipeline.given(profile, settings, model=model, layers=layers, bases=bases, n_study=n_study, seed=seed,
                   data_dir=data_dir)
study_app.app(p, min_rt_ms=min_rt_ms)
