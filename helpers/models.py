"""Model registry and the layer table.

``mini_alexnet``
    AlexNet's shape (5 conv + 3 fc, in-place ReLU, max-pool, dropout) at
    Fashion-MNIST scale, with torchvision's module paths, so one layer table
    serves both models. Trained on first use (reproducibly: see
    :mod:`helpers.training`) and cached per profile as the ``model`` artifact,
    whose content hash is the model's id in every later artifact.
``alexnet``
    ``torchvision.models.alexnet(weights=AlexNet_Weights.IMAGENET1K_V1)``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import keys, store
from .config import Profile
from .batches import Batches
from .data import CHANNELS, images_key, load_dataset, select

log = logging.getLogger(__name__)

LAYER_TABLE = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc1": "classifier.1",
    "fc2": "classifier.4",
    "fc3": "classifier.6",
}
"""Paper layer name -> module path (the module whose output is taken pre-ReLU)."""

MODELS = {
    "mini_alexnet": {"channels": 1, "input": "1-channel 28 x 28 images (Fashion-MNIST)", "trained": True},
    "alexnet": {"channels": 3, "input": "RGB 224 x 224 images (ImageNet or an image folder)",
                "weights": "IMAGENET1K_V1"},
}
"""Each model: the images it takes, and whether it is a stand-in trained here."""
MADE_BY = "01_sample (it trains the stand-in model on first use)"
SOURCES = ("models", "training", "data", "batches")


def layer_paths(layers) -> dict[str, str]:
    """Map paper layer names to module paths.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [name for name in layers if name not in LAYER_TABLE]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {unknown}; valid layers are {list(LAYER_TABLE)}."
        )
    if not layers:
        raise ValueError(f"layers is empty; choose some of {list(LAYER_TABLE)}.")
    return {name: LAYER_TABLE[name] for name in layers}


def get_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` means CUDA when available, else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class MiniAlexNet(nn.Module):
    """AlexNet at Fashion-MNIST scale (1 x 28 x 28 input, 10 classes).

    ============  ==================  ===========
    layer         parameters          output
    ============  ==================  ===========
    conv1         k=5, s=1, p=2       24 x 28 x 28
    max-pool      k=3, s=2, p=1       24 x 14 x 14
    conv2         k=3, s=1, p=1       48 x 14 x 14
    max-pool      k=3, s=2, p=1       48 x 7 x 7
    conv3         k=3, s=1, p=1       64 x 7 x 7
    conv4         k=3, s=1, p=1       48 x 7 x 7
    conv5         k=3, s=1, p=1       48 x 7 x 7
    max-pool      k=3, s=2, p=0       48 x 3 x 3
    fc1, fc2      dropout 0.3         256
    fc3                               10
    ============  ==================  ===========
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 24, 5, 1, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(24, 48, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(48, 64, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 48, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(48, 48, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(48 * 3 * 3, 256), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(256, 256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@torch.no_grad()
def evaluate(model, dataset, indices=None, batch_size: int = 256, device=None,
             num_workers: int = 0, desc: str = "evaluate") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (or the images ``indices``)."""
    device = get_device(device)
    model.eval().to(device)
    correct = total = 0
    batches = Batches(dataset, indices, batch_size, num_workers, device)
    for x, y, _ in tqdm(batches, desc=desc, leave=False):
        pred = model(x.to(device, non_blocking=True)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / total


def check(profile: Profile) -> None:
    """Refuse an unknown model, or one that cannot take the dataset's images, before any work.

    Raises
    ------
    ValueError
        Naming the model, the dataset and what would work.
    """
    spec = MODELS.get(profile.model)
    if spec is None:
        raise ValueError(f"model={profile.model!r} is unknown; use one of {list(MODELS)}.")
    channels = CHANNELS.get(profile.dataset)
    if channels is not None and channels != spec["channels"]:
        fits = [name for name, s in MODELS.items() if s["channels"] == channels]
        raise ValueError(
            f"model={profile.model!r} takes {spec['input']}, but dataset={profile.dataset!r} gives "
            f"{channels}-channel images; use model={fits[0]!r} with this dataset, or a dataset of "
            f"{spec['input'].split(' (')[0]}.")


def builder(name: str):
    """The constructor of a stand-in model (untrained)."""
    if name == "mini_alexnet":
        return MiniAlexNet
    raise ValueError(f"model={name!r} is not a stand-in trained here; stand-ins: "
                     f"{[n for n, s in MODELS.items() if s.get('trained')]}.")


def is_trained_here(name: str) -> bool:
    """Whether the model is a stand-in trained here (its id is its checkpoint's hash)."""
    return bool(MODELS.get(name, {}).get("trained"))


def weights_id(name: str) -> str:
    """The id of a model with published weights, e.g. ``torchvision:AlexNet_Weights.IMAGENET1K_V1``."""
    from torchvision.models import get_model_weights

    return f"torchvision:{get_model_weights(name)[MODELS[name]['weights']]}"


def checkpoint_key(profile: Profile) -> dict:
    """What a stand-in's checkpoint is made from: model, training settings, training images, code."""
    from .training import HYPER

    images = load_dataset(profile, "train")
    return keys.key({"model": profile.model, "epochs": profile.train_epochs, "seed": profile.seed, **HYPER},
                     {"images": images_key(images, select(len(images), profile.train_limit, profile.seed))},
                     SOURCES)


def load_standin(profile: Profile, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's stand-in: from its checkpoint, or trained now and cached.

    The checkpoint is ``data/<profile>/model/model.pt`` (loaded with
    ``weights_only=True``); its sidecar holds the test accuracy. With
    ``train=False`` a missing or stale checkpoint is an error naming 01_sample.
    """
    from .training import train_pinned

    folder, key = profile.artifact("model"), checkpoint_key(profile)
    if train:
        with store.Build(folder, key, MADE_BY, profile=profile.name, resumable=False) as b:
            if not b.current:
                result = train_pinned(profile, b.partial / "model.pt")
                b.commit(["model.pt"], extra=result)
                log.info("trained %s: test accuracy %.4f", profile.model, result["test_accuracy"])
            meta = b.meta
    else:
        meta = store.read_meta(folder, key, MADE_BY)
    model = builder(profile.model)()
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise store.CorruptArtifactError(
            f"{folder / 'model.pt'} is corrupt or not a {profile.model} checkpoint ({type(e).__name__}); "
            f"delete {folder} and rerun {MADE_BY}."
        ) from None
    return model.eval(), {"name": profile.model, "id": meta["hash"], "test_accuracy": meta["test_accuracy"]}


def load_alexnet(weights: str | None = "IMAGENET1K_V1") -> tuple[nn.Module, dict]:
    """torchvision's AlexNet with ImageNet weights, via torchvision's weights cache.

    Raises
    ------
    FileNotFoundError
        When the weights file is neither in torch's cache nor downloadable.
    """
    import torchvision
    from torchvision.models import AlexNet_Weights

    if weights is None:
        return torchvision.models.alexnet(weights=None).eval(), {"name": "alexnet", "id": "random"}
    w = AlexNet_Weights[weights]
    try:
        model = torchvision.models.alexnet(weights=w)
    except OSError as e:  # URLError and friends
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        raise FileNotFoundError(
            f"AlexNet weights {weights} are not in torch's cache ({cache}) and could not be "
            f"downloaded ({e}). Download {w.url} into {cache.parent}, or set TORCH_HOME to a "
            "folder whose hub/checkpoints/ holds it."
        ) from None
    return model.eval(), {"name": "alexnet", "id": f"torchvision:{w}"}


def load_model(profile: Profile, device=None, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's model in eval mode on ``device``, and an info dict (``name``, ``id``, ...).

    ``id`` identifies the weights in every artifact made with the model: the
    checkpoint's hash for a stand-in, the weights' name for a published model.
    """
    check(profile)
    if is_trained_here(profile.model):
        model, info = load_standin(profile, train)
    else:
        model, info = load_alexnet(MODELS[profile.model]["weights"])
    return model.to(get_device(device or profile.device)), info


def has_relu(layer: str) -> bool:
    """Whether a ReLU follows the layer (all but fc3, the logits)."""
    return layer != "fc3"
