# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Compositional explanations of neurons and of PCs (Mu & Andreas, 2020)
#
# A unit is explained by the logical formula over labelled concepts —
# `(garment AND top) AND NOT bright`, `(water OR river) AND NOT blue` — whose
# mask best overlaps where the unit fires, by intersection over union (IoU)
# over every pixel of the probe images. A unit fires at its top `quantile`
# (0.5 %) of activations over the probe set; its map is upsampled bilinearly
# to the concept masks' size. Formulas grow left-deep with `OR`, `AND`,
# `AND NOT` in a beam of `beam` (5) up to `max_length` (3) concepts, each beam
# formula extended with every concept (`candidates="all"`), ties to the larger
# union, as the reference code does; `formula_search="optimal"` takes the
# certified-best formula instead (exhaustive or branch and bound) and reports
# how far the beam's formulas are from it. Units: the top `n_explain` PCs of each layer (each sign
# its own unit: a PC's sign is arbitrary) and the top `n_explain` neurons by
# variance. Layers without a spatial map (fc layers) are skipped.
#
# Concepts: Broden at `broden_root` (the paper profile; its ADE20K images and the
# categories object, part, scene, texture, color, as the reference results),
# or, on Fashion-MNIST, a deterministic annotator (`helpers/images/concepts.py`):
# garment/background, intensity bands, regions of the garment, edge
# orientations, texture, and the class as an image-level concept.
#
# The IoU measures interpretability without people, beside Fig. 7; the last
# section asks whether better-explained units matter more to the task.
#
# Reads `data/<profile>/<model>/model/` and `bases/`; writes
# `data/<profile>/<model>/compositional/`, and in `figures/<profile>/<model>/`
# `compositional_explanations.csv`, `compositional_vs_ablation.csv`,
# `fig_compositional_iou`, `fig_compositional_iou_by_length` and
# `fig_compositional_examples` (`.png`, `.pdf`). An interrupted run resumes at
# the first unfinished layer.

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
eval_split = None  # the split the index, ablation and 08 read
n_eval = None  # eval images (a seeded subset); None: the whole split
concepts = None  # 08: "fashion" (Fashion-MNIST annotator) | "broden"; None: "auto"
broden_root = None  # 08: Broden folder (index.csv, label.csv, images/)
broden_subset = None  # 08: e.g. "ade20k" (default) or "all"
broden_categories = None  # 08: e.g. "object,part,scene,texture,color"
mask_size = None  # 08: mask side (Broden only); None: Broden's own
n_probe = None  # 08: probe images (seeded subset); quick: 2000
quantile = None  # 08: a unit fires at its top quantile (0.005)
beam = None  # 08: beam width (the reference's: 5)
max_length = None  # 08: longest formula (the reference's: 3)
candidates = None  # 08: "all" (every concept, the reference's) | "firing" (a speed option)
formula_search = None  # 08: "beam" (as the reference) | "optimal" (certified; max_length 3 at most)
n_explain = None  # 08: units per basis and layer; None: n_study
n_study = None  # grids saved per basis and layer (the study's stimuli)
explain_all_neurons = None  # 08: True: every neuron, not only the top n_explain
ablation_eval = None  # eval images of the sweep (a seeded subset of n_eval); None: all
batch_size = None  # images per forward pass
num_workers = None  # DataLoader workers for image folders
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
nproc = None  # processes on this machine (one per GPU); >1: the unit maps on torch.distributed ranks, the same maps
nnodes = None  # machines taking part (torchrun's --nnodes)
node_rank = None  # this machine's place among them (torchrun's --node-rank)
rdzv_endpoint = None  # "host:port" of machine 0 (torchrun's --rdzv-endpoint)
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, bases=bases, eval_split=eval_split, n_eval=n_eval,
    concepts=concepts, broden_root=broden_root, broden_subset=broden_subset,
    broden_categories=broden_categories, mask_size=mask_size, n_probe=n_probe, quantile=quantile, beam=beam,
    max_length=max_length, candidates=candidates, formula_search=formula_search, n_explain=n_explain,
    n_study=n_study, explain_all_neurons=explain_all_neurons, ablation_eval=ablation_eval,
    batch_size=batch_size, num_workers=num_workers, seed=seed, device=device, nproc=nproc, nnodes=nnodes,
    node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
import pandas as pd

from helpers import explain, plots
from helpers.pipeline import provenance

# %%
provenance.ensure_reads(p, "08")
units = pd.DataFrame(explain.make_explanations(p))
meta = provenance.require(p, "compositional")
if meta.get("skipped_layers"):
    print(f"skipped (no spatial map): {', '.join(meta['skipped_layers'])}")
print(f"{meta['probe_images']} probe images, {meta['concepts'] - 1} concept numbers, "
      f"{meta['signatures']} distinct concept sets at a pixel")
table = units[list(explain.TABLE)]
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("compositional_explanations.csv"), index=False)

# %% [markdown]
# ## Beam vs certified optimum
#
# With `formula_search="optimal"`: per layer and basis, the share of units whose
# beam formula is not optimal and the IoU the beam leaves (optimum − beam).

# %%
if p.formula_search == "optimal":
    gaps = explain.optimality(units)
    gaps.to_csv(p.figure("compositional_optimality.csv"), index=False)
    display(gaps.style.format({"suboptimal_share": "{:.2f}", "mean_iou_left": "{:.4f}", "max_iou_left": "{:.4f}"}))
else:
    print("beam search only (formula_search='beam'); -p formula_search=optimal compares it with the optimum")

# %% [markdown]
# ## The best-explained units of each layer
#
# `formula` at most `max_length` concepts long; `iou_length1`: the best single
# concept (NetDissect's answer). A PC's `sign` says which end of the direction
# fires.

# %%
best = table.sort_values("iou", ascending=False).groupby(["layer", "basis"], sort=False).head(2)
best.sort_values(["layer", "basis"], key=lambda c: c.map({l: i for i, l in enumerate(p.layers)})
                 if c.name == "layer" else c, kind="stable").style.format({"iou": "{:.3f}", "iou_length1": "{:.3f}"})

# %% [markdown]
# ## IoU per layer: PCs vs neurons
#
# Mean IoU of the best formula per layer, ± one standard error over units, in
# Fig. 7's layout: a measure of interpretability that needs no participants.

# %%
fig = plots.compositional_iou(table)
plots.save(fig, p.figure("fig_compositional_iou"))
table.groupby(["layer", "basis"], sort=False)["iou"].agg(["mean", "sem", "count"]).unstack("basis")

# %% [markdown]
# ## Longer formulas
#
# The best IoU with formulas of at most 1 … 5 concepts (one search to length 5
# holds every shorter answer: the beam is the same up to each length).

# %%
lengths = range(1, explain.LONGEST + 1)
fig = plots.compositional_iou_by_length(units, lengths)
plots.save(fig, p.figure("fig_compositional_iou_by_length"))
units.groupby("basis")[[f"iou_max_length_{k}" for k in lengths]].mean()

# %% [markdown]
# ## Examples
#
# For the best-explained PC unit and neuron of a few layers: the probe images
# where the unit's mask (red outline) is largest, with the formula's mask (blue).

# %%
images, indices, concepts = explain.probe(p)
shown = []
for layer in list(dict.fromkeys(units.layer))[-3:]:
    for basis in ("pca", "neuron"):
        mine = units[(units.layer == layer) & (units.basis == basis)]
        if not len(mine) or mine.iou.max() <= 0:
            continue
        u = mine.loc[mine.iou.idxmax()]
        ex = explain.examples(p.artifact("compositional"), u)  # picked by the unit's id
        name = f"PC {u.component}{u.sign}" if basis == "pca" else f"neuron {u.neuron}"
        shown.append({"title": f"{layer} {name}: {u.formula} (IoU {u.iou:.2f})",
                      "images": [images.display(int(i)) for i in ex["probe_index"]],
                      "masks": list(ex["mask"]), "formula_masks": list(ex["formula_mask"])})
fig = plots.compositional_examples(shown)
plots.save(fig, p.figure("fig_compositional_examples"))

# %% [markdown]
# ## Does interpretability track importance?
#
# Mu & Andreas find that units with better explanations matter more to the
# task. Per unit: the drop in top-1 accuracy on the eval images (05's
# `ablation_eval`) when that unit alone is mean-ablated; per layer and basis,
# Spearman's ρ between IoU and drop (a PC counts once, with its better sign).

# %%
rho = explain.importance(units)
rho.to_csv(p.figure("compositional_vs_ablation.csv"), index=False)
provenance.record_outputs(p, "08")
rho
