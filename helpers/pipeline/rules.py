"""Every setting's valid values (:data:`RULES`), and :func:`validate`: each error names the setting, its
value and what is valid, before any work starts.
"""
from __future__ import annotations

import numbers
import re



def _coerce_layers(value):
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _coerce_numbers(value):
    """``"0.01,0.05"`` (papermill's -p), one number (``-p mis_bands=0.2``) or a list -> a tuple of floats;
    anything else as it is (refused later)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value,)
    value = _coerce_layers(value)
    if isinstance(value, tuple):
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return value
    return value


SIMILARITY = re.compile(r"pixels|dreamsim|model:\S+")


DATASETS = ("fashion_mnist", "imagenet", "imagefolder", "fortunes", "textfolder")
"""The named datasets; besides them, ``hf:<name>[:<config>]`` names a Hugging Face ``datasets`` corpus."""


TEXT_DATASETS = ("fortunes", "textfolder")
"""The named datasets of text (the rest are images)."""


HF_DATASET = re.compile(r"hf:[^:\s]+(:[^:\s]+)?")


def is_text_dataset(dataset: str) -> bool:
    """Whether ``dataset`` gives text (``fortunes``, ``textfolder``, ``hf:<name>``), not images."""
    return dataset in TEXT_DATASETS or bool(HF_DATASET.fullmatch(str(dataset)))


FASHION_SPLITS = ("train", "test")


DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")


def _integer(value, low):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _text(value):
    return isinstance(value, str) and value.strip() != ""


def _layers(value):
    return (isinstance(value, tuple) and len(value) > 0 and all(_text(v) for v in value)
            and len(set(value)) == len(value))


_POSITIVE = ("a positive integer", lambda v: _integer(v, 1))


_OPTIONAL_POSITIVE = ("a positive integer, or None for all", lambda v: v is None or _integer(v, 1))


_FLAG = ("True or False", lambda v: isinstance(v, bool))


_FOLDER = ("a folder path, or None", lambda v: v is None or _text(v))


RULES = {
    "dataset": (f"one of {DATASETS} or 'hf:<name>[:<config>]' (a Hugging Face datasets corpus)",
                lambda v: v in DATASETS or bool(HF_DATASET.fullmatch(str(v)))),
    "data_root": _FOLDER,
    "model": ("a model name such as 'mini_alexnet' or 'alexnet'", _text),
    "layers": ("distinct layer names, e.g. 'conv1,fc1'", _layers),
    "sample_split": ("a split name such as 'train'", _text),
    "eval_split": ("a split name such as 'test' or 'val'", _text),
    "n_sample": _OPTIONAL_POSITIVE, "n_eval": _OPTIONAL_POSITIVE,
    "train_epochs": _POSITIVE, "train_limit": _OPTIONAL_POSITIVE,
    "batch_size": _POSITIVE,
    "num_workers": ("an integer >= 0", lambda v: _integer(v, 0)),
    "seed": ("an integer >= 0", lambda v: _integer(v, 0)),
    "device": ("'cpu', 'cuda', 'cuda:N', 'mps', or None for CUDA when available",
               lambda v: v is None or (isinstance(v, str) and DEVICE.fullmatch(v) is not None)),
    "precision": ("'fp32' (the default), 'tf32' (TensorFloat-32 products on CUDA) or 'bf16' (bfloat16 autocast)",
                  lambda v: v in ("fp32", "tf32", "bf16")),
    "decode": ("'pil' (PIL in the loader workers, the default) or 'device' (decode_jpeg batched on the device)",
               lambda v: v in ("pil", "device")),
    "pca_chunk": _POSITIVE, "index_cap": _OPTIONAL_POSITIVE,
    "index_kind": ("'flat' (exact) or 'ivf'", lambda v: v in ("flat", "ivf")),
    "nlist": _POSITIVE, "nprobe": _POSITIVE,
    "n_targets": ("an integer >= 2 (targets per basis vector: the grid's columns)", lambda v: _integer(v, 2)),
    "n_neighbours": ("an integer >= 1 (patches per target: the grid's rows)", lambda v: _integer(v, 1)),
    "thumb": ("an integer >= 2 (pixels per patch)", lambda v: _integer(v, 2)),
    "token_margin": ("a number >= 0 (patches of context around a ViT token's patch)",
                     lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0),
    "n_show": _POSITIVE, "n_study": _POSITIVE, "ablation_eval": _OPTIONAL_POSITIVE,
    "ablation_dense": _FLAG, "skip_bad_images": _FLAG, "retrain": _FLAG,
    "concepts": ("'auto', 'fashion' or 'broden'", lambda v: v in ("auto", "fashion", "broden")),
    "broden_root": _FOLDER,
    "broden_subset": ("a Broden subset such as 'ade20k', or 'all'", _text),
    "broden_categories": ("distinct Broden categories, e.g. 'object,part,scene,texture,color'", _layers),
    "mask_size": _OPTIONAL_POSITIVE, "n_probe": _OPTIONAL_POSITIVE,
    "quantile": ("a number in (0, 1), e.g. 0.005 (the top 0.5 %)",
                 lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < 1),
    "beam": _POSITIVE, "max_length": _POSITIVE, "n_explain": _OPTIONAL_POSITIVE,
    "candidates": ("'all' (every concept, the reference's) or 'firing' (concepts where the unit fires)",
                   lambda v: v in ("all", "firing")),
    "formula_search": ("'beam' (the reference's) or 'optimal' (certified, max_length <= 3)",
                       lambda v: v in ("beam", "optimal")),
    "explain_all_neurons": _FLAG,
    "bases": ("distinct names from pca, neuron, ica, nmf, sae, random, with pca among them, e.g. 'pca,neuron,sae'",
              lambda v: _layers(v) and "pca" in v and set(v) <= {"pca", "neuron", "ica", "nmf", "sae", "random"}),
    "adjacent_repeats": ("'allow' (the paper's), 'patch' (no patch in two adjacent columns of a grid), 'image' "
                         "(no image in two adjacent columns) or 'grid' (no patch in two columns of a grid)",
                         lambda v: v in ("allow", "patch", "image", "grid")),
    "mis_similarity": ("'pixels', 'model:<name>' (another network's penultimate features) or 'dreamsim'",
                       lambda v: isinstance(v, str) and SIMILARITY.fullmatch(v) is not None),
    "mis_alpha": ("a positive number, or None (0.16, published, for dreamsim; the hard choice otherwise)",
                  lambda v: v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0)),
    "mis_bands": ("distinct fractions in (0, 0.5], e.g. '0.01,0.05,0.2'",
                  lambda v: isinstance(v, tuple) and len(v) > 0 and len(set(v)) == len(v)
                  and all(isinstance(q, float) and 0 < q <= 0.5 for q in v)),
    "mis_tasks": _POSITIVE, "mis_references": _POSITIVE,
    "ica_components": _POSITIVE, "nmf_components": _POSITIVE, "sae_latents": ("a positive integer, or None for 4·d",
                                                                        lambda v: v is None or _integer(v, 1)),
    "sae_k": _POSITIVE, "sae_epochs": _POSITIVE,
    "nproc": ("a positive integer (processes on this machine: one per GPU, or a few on a CPU)",
              lambda v: _integer(v, 1)),
    "nnodes": ("a positive integer (machines taking part)", lambda v: _integer(v, 1)),
    "node_rank": ("an integer >= 0 (this machine's place among nnodes; 0 prepares and finishes)",
                  lambda v: _integer(v, 0)),
    "rdzv_endpoint": ("'host:port' of machine 0 (torchrun's --rdzv-endpoint), or None on one machine",
                      lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[^\s:]+:\d+", v) is not None)),
    "data_dir": _FOLDER, "figures_dir": _FOLDER,
}
"""Every setting's valid values: ``name -> (description, test)``."""


def validate(p, examples):
    """Check every setting of profile ``p`` (type, range, combinations that cannot work); return ``p``.

    ``examples`` (the built-in profile ``p`` starts from) supplies the valid value each error suggests,
    named as that profile's default.

    Raises
    ------
    ValueError
        Naming the setting, its value and what is valid, before any work starts.
    """
    for name, (valid, test) in RULES.items():
        value = getattr(p, name)
        if not test(value):
            example = getattr(examples, name)
            hint = (f" (the {examples.name} profile's default is {name}={example!r})"
                    if example is not None and name != "layers" else "")
            raise ValueError(f"setting {name}={value!r} is not valid: expected {valid}{hint}.")
    if p.dataset == "fashion_mnist":
        for name in ("sample_split", "eval_split"):
            if getattr(p, name) not in FASHION_SPLITS:
                raise ValueError(
                    f"setting {name}={getattr(p, name)!r} is not a Fashion-MNIST split: it has "
                    f"{FASHION_SPLITS} (e.g. {name}='{'train' if name == 'sample_split' else 'test'}').")
    if p.concepts == "fashion" and p.dataset != "fashion_mnist":
        raise ValueError(f"setting concepts='fashion' annotates Fashion-MNIST images, but dataset={p.dataset!r}; "
                         "use concepts='broden' with broden_root, or dataset='fashion_mnist'.")
    if p.sae_latents is not None and p.sae_k > p.sae_latents:
        raise ValueError(f"setting sae_k={p.sae_k} is not valid with sae_latents={p.sae_latents}: at most "
                         f"sae_latents latents can be active; use sae_k <= {p.sae_latents}.")
    if p.formula_search == "optimal" and p.max_length > 3:
        raise ValueError(f"setting formula_search='optimal' is not valid with max_length={p.max_length}: the "
                         "certified search covers formulas of at most 3 concepts; use max_length <= 3, or "
                         "formula_search='beam'.")
    if p.index_kind == "ivf" and p.nprobe > p.nlist:
        raise ValueError(f"setting nprobe={p.nprobe} is not valid with nlist={p.nlist}: an IVF index has "
                         f"nlist lists to probe; use nprobe <= {p.nlist}.")
    if p.mis_similarity.startswith("model:") and p.mis_similarity[6:] == p.model:
        raise ValueError(f"setting mis_similarity={p.mis_similarity!r} is the network being explained; the "
                         "similarity must come from another one, e.g. mis_similarity='model:mini_resnet', or "
                         "'pixels'.")
    if p.nnodes > 1 and not p.rdzv_endpoint:
        raise ValueError(f"setting nnodes={p.nnodes} needs rdzv_endpoint: 'host:port' of machine 0, the same on "
                         "every machine (e.g. rdzv_endpoint='node0:29500').")
    if p.node_rank >= p.nnodes:
        raise ValueError(f"setting node_rank={p.node_rank} is not valid with nnodes={p.nnodes}: use 0 to "
                         f"{p.nnodes - 1}.")
    return p
