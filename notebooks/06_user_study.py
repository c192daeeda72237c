# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · The user study: stimuli, a machine observer, the app (§4.2, Fig. 14)
#
# Interpretability is measured by a two-alternative forced choice: each trial
# shows one basis vector's grid in its true column order and the same grid with
# its columns shuffled (a seeded permutation, never the identity), one above the
# other; the participant picks the one with a coherent left-to-right
# transition. The stimuli are the top `n_study` PCs and top `n_study` neurons of
# every layer (the grids saved by 04). Each participant gets every stimulus
# once, in an order and with top/bottom positions seeded by their code. The
# answer key is stored apart from what participants see.
#
# Reads `data/<profile>/<model>/grids/` (and, for the machine scores, the sample,
# bases and index); writes `data/<profile>/<model>/stimuli/`,
# `data/<profile>/<model>/responses/machine/pixel-smoothness.jsonl`,
# `data/<profile>/<model>/machine/` and
# `figures/<profile>/<model>/fig14_study_trial.{png,pdf}`. Human answers go to
# `data/<profile>/<model>/responses/human/<code>.jsonl` (keep them safe: they are the
# study's data). For participants, serve the app alone with `make study`.

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
n_study = None  # grids saved per basis and layer (the study's stimuli)
n_targets = None  # points along a basis vector (grid columns)
n_neighbours = None  # patches per point (grid rows)
thumb = None  # patch thumbnail side (pixels)
token_margin = None  # ViT: patches of context around a token's patch
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available (the machine scores' search and similarity)
mis_similarity = None  # held-out-query score: "pixels" | "model:<name>" (another network) | "dreamsim"
mis_alpha = None  # its sigmoid's slope; None: the published 0.16 for dreamsim, the hard choice otherwise
mis_bands = None  # difficulty bands, e.g. "0.01,0.05,0.2": tasks drawn from the top/bottom q of the codes
mis_tasks = None  # tasks per basis vector and band
mis_references = None  # reference patches per side of a task
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, bases=bases, n_study=n_study, n_targets=n_targets,
    n_neighbours=n_neighbours, thumb=thumb, token_margin=token_margin, seed=seed, device=device,
    mis_similarity=mis_similarity, mis_alpha=mis_alpha, mis_bands=mis_bands, mis_tasks=mis_tasks,
    mis_references=mis_references, data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
import pandas as pd

from helpers import plots, study
from helpers.pipeline import provenance
from helpers.study import app as study_app, observers

# %% [markdown]
# ## Stimuli
#
# Made once from the grids and reused while the grids and settings stay the
# same; stimuli that participants have answered are never replaced.

# %%
provenance.ensure_reads(p, "06")
meta = study.make_stimuli(p)
stimuli_key = provenance.expected(p, "stimuli")
stimuli, stimuli_hash = study.load_stimuli(p.artifact("stimuli"), stimuli_key)
print(f"{meta['n_stimuli']} stimuli, {stimuli_hash[:19]}…")
stimuli.groupby(["layer", "basis"], sort=False).size().unstack()

# %% [markdown]
# ## Fig. 14: a trial as a participant sees it
#
# The first trial of participant code `example`.

# %%
trial = study.trial_list(stimuli, "example", p.seed)[0]
fig = plots.study_trial(p.artifact("stimuli"), trial, study_app.INSTRUCTION)
plots.save(fig, p.figure("fig14_study_trial"))
provenance.record_outputs(p, "06")

# %% [markdown]
# ## The machine observer
#
# An automatic participant that sees only the two images: it picks the grid
# whose adjacent columns are more alike (mean distance between 4×4-pooled column
# descriptors; `helpers/study/observers.py`). Its log has the human format, labelled
# `machine`, in `responses/machine/`. 07 analyses it with any human logs.

# %%
path = observers.run(p, stimuli_key=stimuli_key)
machine = pd.read_json(path, lines=True)
machine.pivot_table(index="basis", columns="layer", values="correct", sort=False).round(2)

# %% [markdown]
# ## Interpretability without people
#
# The observer above can win by smoothness alone: a grid's adjacent columns
# often share their nearest patches, so the ordered grid is the smoother one
# whatever the basis vector shows. Two machine measures per studied basis
# vector (`helpers/study/machine.py`), with the random orthonormal basis as a
# baseline when it is fitted (`-p bases=pca,neuron,random`):
#
# - the same grid observer on grids drawn as the paper draws them and drawn
#   with no patch in two adjacent columns (the next nearest one is taken);
# - a held-out-query score (after Zimmermann, Klindt & Brendel, NeurIPS 2024):
#   each task shows `mis_references` patches from the top and from the bottom
#   of the vector's codes over the eval patches and asks where two held-out
#   patches (one from each side) belong, judged by a similarity
#   (`mis_similarity`); a vector scores the mean of `sigmoid(α Δ)` over
#   `mis_tasks` tasks per band (`mis_bands`), 0.5 being chance.
#
# 07 draws them as `fig_machine_interpretability`.

# %%
from helpers.study import machine

meta = machine.make_machine(p)
scores, grid_answers = machine.load_machine(p, provenance.expected(p, "machine"))
print(f"similarity {meta['similarity']}, alpha {meta['alpha'] if meta['alpha'] is not None else 'hard choice'}")
scores.pivot_table(index="basis", columns="layer", values="score", sort=False).round(2)

# %%
grid_answers.pivot_table(index=["grids", "basis"], columns="layer", values="correct", sort=False).round(2)

# %% [markdown]
# ## The study app
#
# In JupyterLab the app runs here; for participants, `make study` serves it alone
# (no code) with Voila at http://localhost:8866. Keyboard answers need the
# pointer over the trial. Under papermill it is only built.

# %%
study_app.app(p)
