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
# profile uses a seeded subset of `ablation_eval` eval images. A language model's layer is ablated at every
# token position, and the measures are next-token top-1 and cross-entropy (nats per token) on held-out
# sequences (`fig06_ablation_loss`): the loss's increase is what the removed vectors carried.
#
# Reads `data/<profile>/<model>/model/` and `bases/`; writes `data/<profile>/<model>/ablation/`,
# `figures/<profile>/<model>/ablation.csv` and `fig06_ablation.{png,pdf}` (on the paper profile
# also `ablation_vs_published.csv`). An interrupted sweep resumes at the first unfinished layer.

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>" | language models: "mini_gpt" | "hf:<name>[:untrained]"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
eval_split = None  # the split the index, ablation and 08 read
n_eval = None  # eval images (a seeded subset); None: the whole split
ablation_eval = None  # eval images of the sweep (a seeded subset of n_eval); None: all
ablation_dense = None  # True: the paper's count grid; False: coarse
batch_size = None  # images per forward pass
num_workers = None  # DataLoader workers for image folders
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
precision = None  # "fp32" (the default) | "tf32" | "bf16": arithmetic of the sweep's forward passes
skip_bad_images = None  # True: skip unreadable images (listed in the sidecars)
nproc = None  # processes on this machine (one per GPU); >1: torch.distributed ranks, the same sweep
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
    ablation_eval=ablation_eval, ablation_dense=ablation_dense, batch_size=batch_size,
    num_workers=num_workers, seed=seed, device=device, precision=precision, skip_bad_images=skip_bad_images,
    nproc=nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, data_dir=data_dir,
    figures_dir=figures_dir,
)
p

# %%
import pandas as pd

from helpers import ablation, models, plots, reference
from helpers.pipeline import provenance

# %%
provenance.ensure_reads(p, "05")
table = pd.DataFrame(ablation.make_ablation(p))
images, indices = models.selection(p, "ablation")
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("ablation.csv"), index=False)
original = table[table.n_ablated == 0].top1.iloc[0]
language = "loss" in table  # a language model: next-token top-1 and loss
print(f"original {'next-token ' if language else ''}top-1 accuracy on {len(indices)} eval "
      f"{'sequences' if language else 'images'}: {100 * original:.2f} %"
      + (f"; loss {table[table.n_ablated == 0].loss.iloc[0]:.4f} nats per token" if language else ""))
if p.published:
    print(f"the paper's (torchvision AlexNet, ImageNet val): {100 * reference.ALEXNET_TOP1:.2f} %")

# %% [markdown]
# On the paper profile the figure draws the published curves beside the reproduced ones (dotted:
# descending, dash-dot: ascending), through the vertices the published figure stores: its export
# dropped many of them, so `ablation_vs_published.csv` compares only the counts where a published
# vertex exists, without interpolating.

# %%
published = reference.ablation() if p.published else None
fig = plots.ablation(table, published=published)
plots.save(fig, p.figure("fig06_ablation"))
if published is not None:
    differences = reference.ablation_vs_published(table, published)
    differences.to_csv(p.figure("ablation_vs_published.csv"), index=False)
    print(reference.summary(differences, "Fig. 6 vs published (top-1 at the published vertices)"),
          "The published curves lack the vertices their export dropped: those counts are not compared.")
if language:
    plots.save(plots.ablation(table, measure="loss"), p.figure("fig06_ablation_loss"))
provenance.record_outputs(p, "05")

# %% [markdown]
# Accuracy (a language model's: and the loss's increase) after ablating the top 1, 4 and 16 basis vectors of
# each basis:

# %%
top = table[(table.order == "descending") & table.n_ablated.isin([1, 4, 16])]
top.pivot_table(index="layer", columns=["basis", "n_ablated"], values=["top1", "loss_increase"] if language else "top1",
                sort=False)
