# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Sample each layer's activations
#
# Step 1 of the method (paper §3.1): forward every image of the sample split
# through the network and keep, for every studied layer, one activation vector
# per image, the layer module's own output (pre-ReLU) — for a conv map at one
# seeded random spatial position, for a ViT at one seeded random patch token,
# stored with its `(image, y, x)`. How a network's layers are read is asked of
# its family (`helpers/models/families.py`). A stand-in network (`mini_alexnet`,
# `mini_resnet` or `mini_vit`) comes with the weights that ship with the package
# (their hash checked against their record, `helpers/models/weights/`); with
# `retrain=True` (the `smoke` profile's default) it is trained here first.
#
# Writes `data/<profile>/<model>/model/` (stand-in with `retrain=True` only) and `data/<profile>/<model>/sample/`.
# An interrupted run resumes where it stopped. With `nproc` > 1 the images are split among that many
# `torch.distributed` processes (one per GPU), each writing its rows of the same sample (docs/gpus.md).

# %% tags=["parameters"]
profile = "quick"  # "smoke" | "quick" | "paper"
# The settings this step reads (None keeps the profile's value); any other one by name in `settings`, which
# the runner fills with every setting it is given (docs/notebooks.md).
dataset = None  # "fashion_mnist" | "imagenet" | "imagefolder"; text: "fortunes" | "textfolder" | "hf:<name>[:<config>]"
data_root = None  # ImageNet folder with train/ and val/ (paper profile), or a folder of .txt/.jsonl (textfolder)
model = None  # "mini_alexnet" | "mini_resnet" | "mini_vit" | "alexnet" | "resnet18" | "resnet50" | "vit_b_16" | "torchvision:<name>[:<weights>]" | "<module>:<callable>" | language models: "mini_gpt" | "hf:<name>[:untrained]"
layers = None  # e.g. "conv1,fc1" or module paths "layer4.1.conv2"; None: the model's default layers
sample_split = None  # the split sampled (01)
n_sample = None  # sample images (a seeded subset); None: the whole split
retrain = None  # True: train the stand-in here instead of using its shipped weights
train_epochs = None  # when retraining: epochs
train_limit = None  # when retraining: training images (a seeded subset); None: all
batch_size = None  # images per forward pass
num_workers = None  # DataLoader workers for image folders
seed = None  # every seeded choice (subsets, shuffles, learned bases)
device = None  # "cuda", "cpu"; None: CUDA when available
skip_bad_images = None  # True: skip unreadable images (listed in the sidecars)
nproc = None  # processes on this machine (one per GPU); >1: torch.distributed ranks, the same sample
nnodes = None  # machines taking part (torchrun's --nnodes)
node_rank = None  # this machine's place among them (torchrun's --node-rank)
rdzv_endpoint = None  # "host:port" of machine 0 (torchrun's --rdzv-endpoint)
data_dir = None  # artifacts' folder; None: data/<profile>
figures_dir = None  # figures' and tables' folder; None: figures/<profile>
settings = {}  # other settings by name, e.g. {"sae_epochs": 3} for the bases this notebook reads

# %%
from helpers import pipeline

p = pipeline.given(
    profile, settings, dataset=dataset, data_root=data_root, model=model, layers=layers,
    sample_split=sample_split, n_sample=n_sample, retrain=retrain, train_epochs=train_epochs,
    train_limit=train_limit, batch_size=batch_size, num_workers=num_workers, seed=seed, device=device,
    skip_bad_images=skip_bad_images, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
    rdzv_endpoint=rdzv_endpoint, data_dir=data_dir, figures_dir=figures_dir,
)
p

# %%
import pandas as pd

from helpers import models, sampling

# %% [markdown]
# ## The network

# %%
net, info = models.load_model(p)
accuracy = f", test accuracy {100 * info['test_accuracy']:.2f} %" if "test_accuracy" in info else ""
print(f"{info['name']} ({info['family']} family){accuracy}; weights {info['id'][:40]}…"
      + (f" ({info['weights']})" if "weights" in info else ""))
if info.get("compared"):
    print(f"retrained: {info['compared']}")

# %% [markdown]
# ## One forward pass per batch, all layers captured pre-ReLU

# %%
meta = sampling.make_sample(p)
if meta["bad_images"]:
    print(f"{len(meta['bad_images'])} unreadable image(s) skipped, e.g. {meta['bad_images'][0]['path']}")
pd.DataFrame([{"layer": k, "output shape": tuple(v), "samples": meta["files"][f"{k}.npy"]["shape"][0]}
              for k, v in meta["shapes"].items()])
