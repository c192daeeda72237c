"""Model registry and the layer table.

``mini_alexnet``
    AlexNet's shape (5 conv + 3 fc, in-place ReLU, max-pool, dropout) at
    Fashion-MNIST scale, with torchvision's module paths, so one layer table
    serves both models. Trained on first use and cached per profile.
``alexnet``
    ``torchvision.models.alexnet(weights=AlexNet_Weights.IMAGENET1K_V1)``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from . import store
from .config import Profile
from .data import load_dataset, loader, select

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

MODELS = ("mini_alexnet", "alexnet")
TRAIN = {"lr": 1e-3, "batch_size": 128}


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
    batches = loader(dataset, indices, batch_size, num_workers, device)
    for x, y in tqdm(batches, desc=desc, leave=False):
        pred = model(x.to(device, non_blocking=True)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / total


def train_mini_alexnet(profile: Profile, device=None) -> tuple[nn.Module, float]:
    """Train ``mini_alexnet`` with Adam for ``profile.train_epochs`` epochs (seeded).

    Returns the model (eval mode) and its top-1 accuracy on the eval split.
    """
    device = get_device(device or profile.device)
    torch.manual_seed(profile.seed)
    train = load_dataset(profile, "train")
    idx = select(len(train), profile.train_limit, profile.seed)
    batches = DataLoader(Subset(train, idx), batch_size=TRAIN["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(profile.seed))
    model = MiniAlexNet().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN["lr"])
    for epoch in range(profile.train_epochs):
        model.train()
        for x, y in tqdm(batches, desc=f"train mini_alexnet, epoch {epoch + 1}/{profile.train_epochs}"):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            loss.backward()
            opt.step()
    test = load_dataset(profile, profile.eval_split)
    acc = evaluate(model, test, select(len(test), profile.n_eval, profile.seed),
                   device=device, desc="test accuracy")
    return model.eval(), acc


def _checkpoint_params(profile: Profile) -> dict:
    return {"model": "mini_alexnet", "dataset": profile.dataset, "epochs": profile.train_epochs,
            "train_limit": profile.train_limit, "seed": profile.seed, **TRAIN}


def load_mini_alexnet(profile: Profile, device=None, train: bool = True) -> tuple[nn.Module, dict]:
    """The profile's ``mini_alexnet``: from its checkpoint, or trained now and cached.

    The checkpoint is ``data/<profile>/model/model.pt`` (loaded with
    ``weights_only=True``); its sidecar holds the test accuracy.
    """
    folder = profile.artifact("model")
    params = _checkpoint_params(profile)
    made_by = "01_sample (it trains the model on first use)"
    try:
        meta = store.read_meta(folder, params, made_by)
    except FileNotFoundError:
        if not train:
            raise
        model, acc = train_mini_alexnet(profile, device)
        partial, _ = store.begin(folder, params, made_by)
        torch.save(model.state_dict(), partial / "model.pt")
        meta = store.commit(partial, folder, params, profile.name, "model", ["model.pt"],
                            extra={"test_accuracy": acc})
        log.info("trained mini_alexnet: test accuracy %.4f", acc)
    model = MiniAlexNet()
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise ValueError(
            f"{folder / 'model.pt'} is corrupt or not a mini_alexnet checkpoint ({type(e).__name__}); "
            f"delete {folder} to retrain it."
        ) from None
    return model.eval(), {"name": "mini_alexnet", "id": meta["hash"],
                          "test_accuracy": meta["test_accuracy"]}


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
    """The profile's model in eval mode on ``device``, and an info dict (``name``, ``id``, ...)."""
    if profile.model == "mini_alexnet":
        model, info = load_mini_alexnet(profile, device, train)
    elif profile.model == "alexnet":
        model, info = load_alexnet()
    else:
        raise ValueError(f"model={profile.model!r} is unknown; use one of {list(MODELS)}.")
    return model.to(get_device(device or profile.device)), info


def has_relu(layer: str) -> bool:
    """Whether a ReLU follows the layer (all but fc3, the logits)."""
    return layer != "fc3"
