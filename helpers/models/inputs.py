"""A profile's images as its model reads them: the dataset of a split (preprocessed with the model's own
preset), checked before any work, cached while its files are unchanged, and the images each step uses
(:func:`selection`).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..images.fashion import FASHION_LOCAL_DIR, FASHION_SYSTEM_DIR, fashion_mnist
from ..images.common import select
from ..images.folders import image_folder
from ..pipeline.rules import is_text_dataset
from ..pipeline.settings import Profile

log = logging.getLogger(__name__)


def check_split(profile: Profile, split: str, name: str = "eval_split") -> None:
    """Refuse a split the dataset lacks, before any work, suggesting the ones it has.

    Raises
    ------
    FileNotFoundError
        For a folder dataset without ``<data_root>/<split>``.
    ValueError
        When ``data_root`` is not set for a folder dataset.
    """
    if profile.dataset == "fashion_mnist":
        return  # its splits are checked with the profile (config.validate)
    if is_text_dataset(profile.dataset):
        load_dataset(profile, split)  # a corpus is read, tokenized and packed once per process, and kept
        return
    if profile.data_root is None:
        image_folder(None, split)
    root = Path(profile.data_root).expanduser()
    if not root.is_dir():
        image_folder(root, split)
    if not (root / split).is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = f" Use {name}={found[0]!r} (e.g. -p {name}={found[0]})." if len(found) == 1 else (
            f" Use one of them, e.g. -p {name}=val." if "val" in found else "")
        raise FileNotFoundError(
            f"setting {name}={split!r}: {root / split} does not exist; {root} has the splits {found}.{hint}")


_CACHE: dict = {}


def load_dataset(profile: Profile, split: str):
    """The profile's dataset for one split (``profile.sample_split`` or ``eval_split``).

    Loaded once per process and kept while its files are unchanged.
    """
    stamp = _stamp(profile, split)
    folder = profile.dataset != "fashion_mnist"  # the model's preprocessing (or tokenizer) decides its inputs
    which = (profile.dataset, profile.data_root, split, profile.model if folder else None,
             profile.decode if folder else None)
    cached = _CACHE.get(which)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    ds = _load_dataset(profile, split)
    _CACHE[which] = (stamp, ds)
    return ds


def _stamp(profile: Profile, split: str):
    """Modification times that change when the split's files do (None: no caching)."""
    if profile.dataset == "fashion_mnist" or is_text_dataset(profile.dataset):
        return None
    folder = Path(profile.data_root or ".").expanduser() / split
    try:
        return tuple((d.name, d.stat().st_mtime_ns) for d in sorted(folder.iterdir()) if d.is_dir())
    except OSError:
        return None


def _load_dataset(profile: Profile, split: str):
    if profile.dataset == "fashion_mnist":
        dirs = None
        if profile.data_root:
            dirs = (Path(profile.data_root), FASHION_SYSTEM_DIR, FASHION_LOCAL_DIR)
        return fashion_mnist(split, dirs)
    if profile.dataset in ("imagenet", "imagefolder"):
        from .registry import preprocessing

        ds = image_folder(profile.data_root, split, preset=preprocessing(profile.model), decode=profile.decode)
        if profile.dataset == "imagenet" and len(ds.classes) != 1000:
            log.warning("%s has %d classes, not ImageNet's 1000: accuracies will not be ImageNet's.",
                        profile.data_root, len(ds.classes))
        return ds
    if is_text_dataset(profile.dataset):
        from ..text.sequences import TextSequences, load_corpus
        from .language import text_input

        tokenizer, end_of_text, length = text_input(profile.model)
        return TextSequences(load_corpus(profile.dataset, profile.data_root, split), tokenizer, length, end_of_text)
    raise ValueError(
        f"dataset={profile.dataset!r} is unknown; use 'fashion_mnist', 'imagenet' or 'imagefolder' (images), or "
        "'fortunes', 'textfolder' or 'hf:<name>[:<config>]' (text)."
    )


def selection(p: Profile, which: str):
    """``(dataset, indices)`` of the images a step uses.

    ``which``: ``"sample"`` (01: ``n_sample`` of the sample split), ``"eval"``
    (03, 04: ``n_eval`` of the eval split) or ``"ablation"`` (05, 08: a seeded
    ``ablation_eval`` of those).
    """
    split = p.sample_split if which == "sample" else p.eval_split
    dataset = load_dataset(p, split)
    indices = select(len(dataset), p.n_sample if which == "sample" else p.n_eval, p.seed)
    if which == "ablation":
        indices = indices[select(len(indices), p.ablation_eval, p.seed)]
    return dataset, indices
