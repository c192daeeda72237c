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
# The settings this step reads (None keeps the profile's value). Any other setting reaches it too, from the
# runner or papermill (-p name=value): see docs/notebooks.md.
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
n_study = None  # grids saved per basis and layer (the study's stimuli)
seed = None  # every seeded choice (subsets, shuffles, learned bases)
min_rt_ms = 200  # answers faster than this after a trial appears are ignored

# %%
from helpers import pipeline
from helpers.study import app as study_app

p = pipeline.given(profile, globals())
study_app.app(p, min_rt_ms=min_rt_ms)
