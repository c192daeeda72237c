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
# `figures/<profile>/<model>/explained_variance_counts.csv` (on the paper profile also
# `explained_variance_vs_published.csv`).

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>" | language models: "mini_gpt" | "hf:<name>[:untrained]"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
bases = None  # e.g. "pca,neuron,ica,nmf,sae"; None: "pca,neuron" (the paper's)
pca_chunk = None  # rows per streamed chunk of the fit
ica_components = None  # ICA: vectors per layer (at most its d)
nmf_components = None  # NMF: vectors per layer (of the post-ReLU activations)
sae_latents = None  # None: 4·d
sae_k = None  # SAE: active latents per input (TopK)
sae_epochs = None  # SAE: training epochs
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, model=model, layers=layers, bases=bases, pca_chunk=pca_chunk,
    ica_components=ica_components, nmf_components=nmf_components, sae_latents=sae_latents, sae_k=sae_k,
    sae_epochs=sae_epochs, seed=seed, device=device, data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
from helpers import bases as fitting, plots, reference
from helpers.pipeline import provenance

# %%
provenance.ensure_reads(p, "02")
meta = fitting.make_bases(p)
table, curves = fitting.explained_variance_table(p.artifact("bases"), p.layers, key=provenance.expected(p, "bases"))
p.figures_path.mkdir(parents=True, exist_ok=True)
table.to_csv(p.figure("explained_variance_counts.csv"), index=False)
table.pivot(index="layer", columns="curve", values=["k80", "k99"]).loc[list(p.layers)].astype("Int64")

# %% [markdown]
# On the paper profile the figure draws the published curves beside the reproduced ones (dotted; PCA
# post-ReLU dash-dot), and `explained_variance_vs_published.csv` compares them: the reproduced
# curve at every k where the published figure has a point, and the 80 %/99 % counts.

# %%
published = reference.explained_variance() if p.published else None
fig = plots.explained_variance(curves, published=published)
plots.save(fig, p.figure("fig05_explained_variance"))
if published is not None:
    differences = reference.explained_variance_vs_published(curves, table, published)
    differences.to_csv(p.figure("explained_variance_vs_published.csv"), index=False)
provenance.record_outputs(p, "02")

# %% [markdown]
# On the paper profile, the reproduced counts beside the paper's. The labels printed on Fig. 5
# (`paper_printed_k80`, `paper_printed_k99`) are positions on its x axis, which counts from 0:
# the paper's number of vectors is one more (`paper_k80`, `paper_k99`, comparable to `k80`, `k99`).

# %%
if p.published:
    variance = differences[differences.measure == "variance"]
    print(reference.summary(variance, "Fig. 5 vs published (variance explained at the published k)"))
    display(reference.counts_beside_paper(table))
