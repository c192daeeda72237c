# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · User-study analysis (Fig. 7)
#
# Each trial of the study shows one basis vector's grid twice, once in its true
# column order and once with the columns shuffled; the participant picks the
# one with a coherent left-to-right transition (chance = 0.5). Accuracy per
# layer, PCs vs neurons, is the paper's measure of interpretability: mean ±
# standard error across participants.
#
# Fig. 7 measures whether an observer can tell a grid in its true column order
# from the same grid shuffled; `fig_machine_interpretability` adds measures made
# without people: that observer on grids with no patch in two adjacent columns,
# and a held-out-query score (does a held-out patch from the top or bottom of
# the vector's codes look like the top or the bottom references?).
#
# Reads `data/<profile>/<model>/stimuli/`, `data/<profile>/<model>/machine/` and every log under
# `data/<profile>/<model>/responses/<stimuli id>/{human,machine,web}/` (web: the data files of the jsPsych
# study, docs/study-online.md); writes
# `figures/<profile>/<model>/user_study_accuracy.csv`, `user_study_tests.csv`,
# `machine_interpretability.csv` and `fig07_user_study.{png,pdf}`,
# `fig_machine_interpretability.{png,pdf}` (on the paper profile also `user_study_vs_published.csv`). Every log line is checked against the stimuli
# first: a malformed, inconsistent or stale log stops the notebook with the
# file, the line and the fix.

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
mis_similarity = None  # the held-out-query score's similarity (it names its measure)
seed = None  # every seeded choice (subsets, shuffles, learned bases)
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, bases=bases, mis_similarity=mis_similarity, seed=seed,
    data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
from helpers import plots, reference, study
from helpers.pipeline import provenance
from helpers.study import analysis

# %% [markdown]
# ## The logs
#
# One row per session: `source` is `app` (the Voila app), `web` (the jsPsych study's files) or
# `machine`; `n_answered` of `n_trials` trials; `attention`, the web study's attention checks
# passed. Incomplete sessions and failed attention checks are left out of the tables below (with a
# warning that names them); app and web participants are pooled as `human`. A pair of
# identical images (e.g. a constant grid) cannot be told apart, so it is
# answered at chance and counts as such.

# %%
stimuli, stimuli_hash = study.load_stimuli(p.artifact("stimuli"), provenance.expected(p, "stimuli"))
responses, sessions = analysis.load_responses(p.artifact("responses"), stimuli, stimuli_hash, seed=p.seed)
print(f"{len(stimuli)} stimuli ({stimuli_hash}), {int(stimuli.identical.sum())} of them with identical images")
print("sessions per source:", ", ".join(f"{source} {n}" for source, n in sessions.groupby("source").size().items())
      or "none")
if not (sessions.observer == "human").any():
    print("There are no human logs yet: collect them with the study app of notebook 06_user_study or the web "
          "study (make study-web). The tables below hold the machine observer only.")
sessions

# %% [markdown]
# ## Accuracy per layer and basis
#
# `human`: `n` participants, `accuracy` the mean of their accuracies, `sem` its
# standard error. A machine log is one participant: `n` stimuli, the fraction
# answered correctly and the standard error over stimuli.

# %%
table = analysis.accuracy_table(responses)
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("user_study_accuracy.csv"), index=False)
table

# %% [markdown]
# ## PCs vs neurons
#
# Paired tests per layer and over all layers (`all`): for humans a Wilcoxon
# signed-rank test on each participant's PCA − neuron accuracy; for a machine
# log McNemar's exact test, the i-th PC paired with the i-th neuron of the same
# layer. `difference` is the mean PCA − neuron accuracy; `test` names the method.

# %%
tests = analysis.paired_tests(responses)
tests.to_csv(p.figure("user_study_tests.csv"), index=False)
tests

# %% [markdown]
# ## Fig. 7
#
# One panel per observer; the shaded band is ± one standard error and the
# dotted line chance. On the paper profile the published accuracies (22
# participants, correct answers of 352 trials) are drawn dashed beside the
# reproduced ones with their standard errors, and `user_study_vs_published.csv`
# sets them side by side.

# %%
published = reference.user_study() if p.published else None
if len(table):
    fig = plots.user_study(table, published=published)
    plots.save(fig, p.figure("fig07_user_study"))
    if published is not None:
        differences = reference.user_study_vs_published(table, published)
        differences.to_csv(p.figure("user_study_vs_published.csv"), index=False)
        print(reference.summary(differences, "Fig. 7 vs published (accuracy per observer, layer and basis)"))
else:
    print("No responses yet: nothing to plot.")

# %%
if published is not None and len(table):
    print(differences.to_string(index=False))

# %% [markdown]
# ## Interpretability without people
#
# Per layer and basis, the mean over the studied vectors with its 95 %
# bootstrap interval over vectors: the grid observer on grids drawn as the
# paper draws them and with no patch in two adjacent columns (a patch shared
# by adjacent columns makes the ordered grid the smoother one whatever the
# vector shows), and the held-out-query score in each band (queries never among
# the references). Chance is 0.5 for every measure; the random orthonormal
# basis, when fitted, is the baseline a basis must beat.

# %%
from helpers.study import machine

scores, grid_answers = machine.load_machine(p, provenance.expected(p, "machine"))
machine_table = machine.interpretability_table(scores, grid_answers, p.mis_similarity, p.seed)
machine_table.to_csv(p.figure("machine_interpretability.csv"), index=False)
fig = plots.machine_interpretability(machine_table)
plots.save(fig, p.figure("fig_machine_interpretability"))
provenance.record_outputs(p, "07")
machine_table.pivot_table(index=["measure", "basis"], columns="layer", values="score", sort=False).round(2)
