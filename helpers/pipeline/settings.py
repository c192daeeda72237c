"""Profiles: every setting of a run in one frozen dataclass, and where artifacts go.

A profile names a dataset, a model, the layers to study and the method's
numbers. Three are built in:

``smoke``
    a few hundred Fashion-MNIST images and a briefly trained ``mini_alexnet``;
    for tests.
``quick``
    Fashion-MNIST (60k train / 10k test) and ``mini_alexnet`` with its shipped
    weights; every figure on a laptop CPU in minutes.
``paper``
    torchvision's ImageNet AlexNet on an ImageNet folder given by the user
    (``data_root``); GPU recommended.

Any field can be overridden: ``load_profile("quick", seed=1)``. In notebooks the
``parameters`` cell holds the overrides of the settings its step reads, ``None``
meaning "the profile's value" (:func:`given`); :mod:`.rules` says what is valid.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from .rules import _coerce_layers, _coerce_numbers, validate

ROOT = Path(__file__).resolve().parents[2]
"""The project folder: ``data/`` and ``figures/`` live here unless overridden."""


def FOLDERS(p, name):  # replaced by helpers.pipeline.provenance, imported with helpers.pipeline
    raise LookupError("artifact folders are named by their keys: import helpers.pipeline first.")


PUBLISHED_MODEL = "alexnet"
"""The network whose numbers the paper publishes (:mod:`helpers.reference`)."""


PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3")


def slug(model: str) -> str:
    """The folder name of a model: its name, with anything but letters, digits, ``_ . -`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")


@dataclass(frozen=True)
class Profile:
    """All settings of one run.

    Parameters
    ----------
    name : str
        Profile name; also the folder name under ``data/`` and ``figures/``.
    dataset : {"fashion_mnist", "imagenet", "imagefolder", "fortunes", "textfolder"} or "hf:<name>[:<config>]"
        Images, or a language model's text (:mod:`helpers.text`); ``data_root``: a folder of them.
    data_root : str or None
        Dataset folder (``imagenet``/``imagefolder``: holds ``train/`` and
        ``val/`` class folders). For Fashion-MNIST, an extra folder to look in.
    model : str
        Network to explain: a built-in name (``mini_alexnet``, ``mini_resnet``,
        ``mini_vit``, ``alexnet``, ``resnet18``, ``resnet50``, ``vit_b_16``),
        ``torchvision:<name>[:<weights>]`` or ``<python.module>:<callable>``
        (see :mod:`helpers.models`).
    layers : tuple of str or None
        Layers to study: the family's names (``conv1`` … for AlexNet) or module
        paths (``layer4.1.conv2``); ``None``: the model's default layers.
    sample_split, eval_split : str
        Split whose activations are sampled (PCA) and split used for the
        patch search and accuracy.
    n_sample, n_eval : int or None
        Use only the first ``n`` images of a split (``None``: all of it).
    retrain : bool
        Train the stand-in here (pinned, into ``data/<profile>/<model>/model/``)
        instead of using the weights that ship with the package
        (:mod:`helpers.models.shipped`); ``smoke`` trains its tiny model.
    train_epochs, train_limit : int, int or None
        Training of a stand-in when ``retrain``: epochs, and optionally the
        number of training images (``smoke`` trains on a few hundred); ``seed``
        seeds it. The shipped weights are the quick profile's recipe.
    batch_size, num_workers : int
        DataLoader settings.
    seed : int
        Seeds training, sampled positions and every other random choice.
    device : str or None
        ``"cuda"``, ``"cpu"``, ...; ``None`` picks CUDA when available.
    precision : {"fp32", "tf32", "bf16"}
        Arithmetic of the networks' forward passes: float32 (the default and
        the published numbers'), TensorFloat-32 matrix products on CUDA
        (float32 elsewhere), or bfloat16 autocast (:mod:`helpers.models.running`).
    decode : {"pil", "device"}
        How JPEG folders are decoded and preprocessed: PIL and torchvision's
        transforms in the loader workers (the default), or
        ``torchvision.io.decode_jpeg`` batched on the run's device (the GPU's
        nvJPEG on CUDA), resized there (:mod:`helpers.images.folders`).
    pca_chunk : int
        Rows per block when streaming activations through the PCA.
    index_cap : int or None
        Most eval positions indexed per layer (a seeded subsample); ``None``: all.
    index_kind, nlist, nprobe : str, int, int
        FAISS index: ``"flat"`` (exact L2) or ``"ivf"`` with ``nlist`` lists
        searched with ``nprobe``.
    n_targets, n_neighbours : int
        Targets per basis vector (m, grid columns) and patches per target (k, rows).
    thumb : int
        Side of a patch thumbnail in pixels.
    token_margin : float
        Context shown around a ViT token's own patch, in patches on each side.
    adjacent_repeats : {"allow", "patch", "image", "grid"}
        Whether a grid may show one patch in two adjacent columns: ``"allow"``
        (the paper's nearest neighbours), ``"patch"`` (no ``(image, y, x)`` in two
        adjacent columns: the next nearest is taken), ``"image"`` (no image in
        two adjacent columns) or ``"grid"`` (no patch in two columns of a grid).
        Adjacent columns that share patches make the ordered grid the smoother
        one whatever the basis vector shows.
    n_show : int
        Basis vectors per basis shown in the per-layer figures.
    n_study : int
        Basis vectors per basis and layer in the user study (top ``n_study`` by
        variance, fewer where the layer has fewer dimensions).
    mis_similarity : str
        Similarity of the held-out-query machine score (06): ``"pixels"`` (the
        patches' RMS pixel difference, negated; offline), ``"model:<name>"``
        (cosine of the penultimate features of another network of
        :mod:`helpers.models`, never the one explained) or ``"dreamsim"`` (the
        ``dreamsim`` package and its weights; the paper profile's).
    mis_alpha : float or None
        Slope of the score's sigmoid, ``sigmoid(alpha * delta)``. ``None``: the
        published 0.16 (fitted to human choices on DreamSim similarities) for
        ``dreamsim``, and the hard choice (``alpha`` → ∞: the share of tasks
        answered correctly) for the other similarities, whose scales differ.
    mis_bands : tuple of float
        Difficulty bands of the tasks: references and queries are drawn from the
        top and bottom ``q`` of the codes over the eval patches, for each ``q``.
    mis_tasks, mis_references : int, int
        Tasks per basis vector and band (20), reference patches per side (9).
    ablation_eval : int or None
        Eval images for the ablation sweep (a seeded subset); ``None``: all ``n_eval``.
    ablation_dense : bool
        The paper's dense count grid (every count; fc: to 64, then every 16)
        instead of the coarse one (to 16, then log-spaced, plus 80 %/99 % counts).
    concepts : {"auto", "fashion", "broden"}
        Concepts of the compositional explanations (08): the Fashion-MNIST
        annotator, or Broden at ``broden_root``; ``"auto"``: Broden when
        ``broden_root`` is given, else the annotator on Fashion-MNIST.
    broden_root : str or None
        Broden folder (``index.csv``, ``label.csv``, ``images/``).
    broden_subset : str
        Broden images used (the first folder of their path, e.g. ``"ade20k"``, as the
        reference results), or ``"all"``.
    broden_categories : tuple of str
        Broden categories read (default: object, part, scene, texture, color).
    mask_size : int or None
        Side of the concept and unit masks (Broden only); ``None``: Broden's own (112).
    n_probe : int or None
        Probe images of the compositional explanations (a seeded subset; ``None``: all).
    quantile : float
        A unit fires at its top ``quantile`` of activations over the probe set (0.005).
    beam, max_length : int, int
        Beam width and longest formula of the search (5 and 3, as the reference).
    candidates : {"all", "firing"}
        Concepts a beam formula is extended with: every concept of the probe set
        (the reference's), or (a speed option) only those present in an image
        where the unit fires, which cannot find ``A AND NOT C`` when C occurs
        only where the unit is silent.
    formula_search : {"beam", "optimal"}
        The reference's beam search, or the certified-optimal formula (length
        at most 3; exhaustive for few concepts, branch and bound for many), with
        the beam's answer kept beside it for the share of suboptimal beam formulas.
    n_explain : int or None
        Units explained per basis and layer: the top ``n_explain`` PCs (both signs) and neurons by
        variance; ``None``: ``n_study``.
    explain_all_neurons : bool
        Explain every neuron of each layer instead of the top ``n_explain``.
    bases : tuple of str
        Bases fitted per layer (02) and used by every later step: ``pca`` (always),
        ``neuron``, ``ica``, ``nmf``, ``sae``, ``random`` (a seeded random orthonormal
        basis: the baseline of every yardstick; see :data:`helpers.bases.KINDS`);
        the paper's ``("pca", "neuron")`` by default.
    ica_components, nmf_components : int
        Vectors of the ICA (at most the layer's d) and of the NMF (of the post-ReLU activations).
    sae_latents, sae_k, sae_epochs : int or None, int, int
        The TopK sparse autoencoder: latents (``None``: 4·d), active latents per vector, epochs over the sample.
    skip_bad_images : bool
        Skip images that cannot be read (listed in each artifact's sidecar)
        instead of stopping at the first one with its path.
    nproc, nnodes, node_rank, rdzv_endpoint : int, int, int, str or None
        Processes per machine for the steps that scale with the images (01, 03, 05 and 08's unit maps) and
        torchrun's rendezvous across machines (:mod:`helpers.pipeline.distributed`); the results do not
        depend on them, so no artifact's key holds them.
    data_dir, figures_dir : str or None
        Where artifacts and figures go, one folder per model inside; ``None``
        means ``<project>/data/<name>`` and ``<project>/figures/<name>``.
    """

    name: str
    dataset: str = "fashion_mnist"
    data_root: str | None = None
    model: str = "mini_alexnet"
    layers: tuple | None = None
    sample_split: str = "train"
    eval_split: str = "test"
    n_sample: int | None = None
    n_eval: int | None = None
    retrain: bool = False
    train_epochs: int = 2
    train_limit: int | None = None
    batch_size: int = 256
    num_workers: int = 0
    seed: int = 0
    device: str | None = None
    precision: str = "fp32"
    decode: str = "pil"
    pca_chunk: int = 16384
    index_cap: int | None = 100_000
    index_kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 16
    n_targets: int = 10
    n_neighbours: int = 5
    thumb: int = 32
    token_margin: float = 0.5
    adjacent_repeats: str = "allow"
    n_show: int = 5
    n_study: int = 16
    mis_similarity: str = "pixels"
    mis_alpha: float | None = None
    mis_bands: tuple = (0.01, 0.05, 0.2)
    mis_tasks: int = 20
    mis_references: int = 9
    ablation_eval: int | None = 1000
    ablation_dense: bool = False
    concepts: str = "auto"
    broden_root: str | None = None
    broden_subset: str = "ade20k"
    broden_categories: tuple = ("object", "part", "scene", "texture", "color")
    mask_size: int | None = None
    n_probe: int | None = None
    quantile: float = 0.005
    beam: int = 5
    max_length: int = 3
    candidates: str = "all"
    formula_search: str = "beam"
    n_explain: int | None = None
    explain_all_neurons: bool = False
    bases: tuple = ("pca", "neuron")
    ica_components: int = 64
    nmf_components: int = 64
    sae_latents: int | None = None
    sae_k: int = 16
    sae_epochs: int = 10
    skip_bad_images: bool = False
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    data_dir: str | None = None
    figures_dir: str | None = None

    # -- paths ---------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        """Folder of this profile's artifacts of its model: ``data/<profile>/<model>``."""
        return (Path(self.data_dir) if self.data_dir else ROOT / "data" / self.name) / slug(self.model)

    @property
    def figures_path(self) -> Path:
        """Folder of this profile's figures and tables of its model: ``figures/<profile>/<model>``."""
        return (Path(self.figures_dir) if self.figures_dir else ROOT / "figures" / self.name) / slug(self.model)

    def artifact(self, name: str) -> Path:
        """Folder of the artifact ``name`` these settings ask for, e.g. ``artifact("sample")``:
        ``<data_path>/<name>/<id>`` (:func:`helpers.pipeline.provenance.folder`, which sets :data:`FOLDERS`)."""
        return FOLDERS(self, name)

    @property
    def published(self) -> bool:
        """Whether the paper published numbers of this profile's model (its notebooks compare with them)."""
        return self.model == PUBLISHED_MODEL

    def figure(self, name: str) -> Path:
        """Path of a figure or table without extension (``figures/<profile>/<name>``)."""
        return self.figures_path / name


PROFILES = {
    "smoke": Profile(
        name="smoke", n_sample=320, n_eval=192, retrain=True, train_epochs=1, train_limit=1024,
        batch_size=64, pca_chunk=100, index_cap=2000, nlist=16, nprobe=4, thumb=16,
        ablation_eval=64, n_study=4, n_probe=96, sae_epochs=2, mis_bands=(0.06, 0.25), mis_tasks=10,
    ),
    "quick": Profile(name="quick", n_probe=2000),
    "paper": Profile(
        name="paper", dataset="imagenet", model="alexnet", eval_split="val",
        batch_size=256, num_workers=8, pca_chunk=16384, index_cap=2_000_000, nlist=4096,
        nprobe=32, thumb=64, ablation_eval=None, ablation_dense=True, mis_similarity="dreamsim",
    ),
}


def load_profile(name: str = "quick", **overrides) -> Profile:
    """Return a built-in profile with some fields replaced, every setting validated.

    Parameters
    ----------
    name : {"smoke", "quick", "paper"}
        Built-in profile to start from.
    **overrides
        Field values to replace; ``None`` values are ignored so that a
        notebook's parameters cell can list every field with ``None``.

    Raises
    ------
    ValueError
        For an unknown profile name or setting, or an invalid value (see :data:`RULES`).
    """
    if isinstance(name, Profile):
        base = name
    elif name in PROFILES:
        base = PROFILES[name]
    else:
        raise ValueError(
            f"profile={name!r} is unknown; use one of {sorted(PROFILES)} "
            "(e.g. load_profile('quick') or `--profile quick`)."
        )
    names = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = sorted(k for k in overrides if k not in names)
    if unknown:
        raise ValueError(
            f"unknown profile setting(s) {unknown}; valid settings are {sorted(names)}."
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    for k in ("layers", "broden_categories", "bases"):
        if k in changes:
            changes[k] = _coerce_layers(changes[k])
    if "mis_bands" in changes:
        changes["mis_bands"] = _coerce_numbers(changes["mis_bands"])
    model = changes.get("model", base.model)
    if isinstance(model, str) and model.strip():  # a language model's text; by default, the model's own layers
        from ..models.language import default_layers, text_defaults
        changes.update(text_defaults(base, model, changes))
        changes["layers"] = changes.get("layers") or base.layers or default_layers(model)
    for k in ("data_dir", "figures_dir", "data_root", "broden_root"):
        if isinstance(changes.get(k), PurePath):
            changes[k] = str(changes[k])
    return validate(dataclasses.replace(base, **changes), PROFILES.get(base.name, PROFILES["quick"]))


SETTINGS = tuple(f.name for f in dataclasses.fields(Profile) if f.name != "name")
"""Every overridable setting (a notebook's parameters cell lists those its step reads)."""


TRACE_ENV = "HELPERS_TRACE_SETTINGS"
"""A folder: when set, each notebook's kernel records there which settings it read (``<notebook>.txt``;
the runner names the notebook in ``HELPERS_NOTEBOOK``). The test of the notebooks' parameters cells uses it."""


def given(profile: str, settings: dict | None = None, **cell) -> Profile:
    """The profile a notebook asks for: ``profile`` with the settings it is handed, nothing else.

    ``cell``: the settings of the notebook's parameters cell, by name (``None`` keeps the profile's value);
    ``settings``: any other setting, by name, e.g. one that keys an artifact the notebook reads (the runner
    passes every setting it was given here). A value in the cell wins over the same name in ``settings``.

    Raises
    ------
    ValueError
        For a name that is not a setting, naming the settings.
    """
    given = {**(settings or {}), **{k: v for k, v in cell.items() if v is not None}}
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{unknown}: not a setting; the settings are {sorted(SETTINGS)}.")
    p = load_profile(profile, **given)
    folder = os.environ.get(TRACE_ENV)
    if folder:
        p = _traced(p, Path(folder) / f"{os.environ.get('HELPERS_NOTEBOOK', 'notebook')}.txt")
    return p


def _traced(p: Profile, path: Path) -> Profile:
    """``p``, recording in ``path`` (one name a line) every setting read from it by name (showing or copying
    the whole profile reads none)."""
    read: set = set()
    path.parent.mkdir(parents=True, exist_ok=True)

    class Traced(Profile):
        def __getattribute__(self, name):
            caller = sys._getframe(1).f_code.co_filename  # a whole-profile read (repr, asdict, replace) is none
            if name in SETTINGS and name not in read and not (caller == "<string>" or caller == dataclasses.__file__):
                read.add(name)
                with open(path, "a") as f:
                    f.write(name + "\n")
            return super().__getattribute__(name)

    return Traced(**{f.name: getattr(p, f.name) for f in dataclasses.fields(Profile)})
