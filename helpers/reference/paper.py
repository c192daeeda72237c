"""The numbers the paper prints: AlexNet's accuracy, Fig. 5's counts, Fig. 7's accuracies.
"""
from __future__ import annotations

from ..pipeline.settings import PUBLISHED_MODEL as MODEL  # noqa: F401  (torchvision's AlexNet, ImageNet weights)
from .figures import BASES, TRIALS, read_rows


def applies(model: str) -> bool:
    """Whether the paper's numbers are of ``model`` (the notebooks then print them beside the reproduced ones)."""
    return model == MODEL


ALEXNET_TOP1 = 0.5652
"""Top-1 accuracy of torchvision's AlexNet (IMAGENET1K_V1) on ImageNet val."""


LAYER_DIMS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
              "fc1": 4096, "fc2": 4096, "fc3": 1000}


EXPLAINED_VARIANCE_COUNTS = {
    # layer: {curve: (k80, k99)}, the labels printed on Fig. 5: positions on its 0-based x axis, so the number of
    # vectors is one more (see vectors())
    "conv1": {"pca_pre_relu": (11, 36), "pca_post_relu": (24, 57), "neuron_pre_relu": (40, 60)},
    "conv2": {"pca_pre_relu": (14, 103), "pca_post_relu": (90, 176), "neuron_pre_relu": (101, 184)},
    "conv3": {"pca_pre_relu": (32, 232), "pca_post_relu": (200, 360), "neuron_pre_relu": (244, 373)},
    "conv4": {"pca_pre_relu": (43, 219), "pca_post_relu": (145, 247), "neuron_pre_relu": (183, 251)},
    "conv5": {"pca_pre_relu": (33, 195), "pca_post_relu": (129, 246), "neuron_pre_relu": (187, 251)},
    "fc1": {"pca_pre_relu": (42, 723), "pca_post_relu": (1006, 3763), "neuron_pre_relu": (2782, 3959)},
    "fc2": {"pca_pre_relu": (35, 593), "pca_post_relu": (1077, 3562), "neuron_pre_relu": (2533, 3682)},
    "fc3": {"pca_pre_relu": (37, 624), "neuron_pre_relu": (709, 980)},
}


def vectors(printed: int) -> int:
    """The number of basis vectors a count printed on Fig. 5 stands for: its x axis counts from 0."""
    return printed + 1


USER_STUDY_PARTICIPANTS = 22

USER_STUDY_TRIALS = TRIALS
"""Trials per layer and basis: 22 participants × 16."""


def _study(column: str) -> dict:
    """``{layer: (pca, neuron)}`` of one column of the published Fig. 7 (``correct_of_352`` or ``sem``)."""
    rows = {(r["layer"], BASES[r["basis"]]): r[column] for r in read_rows("fig7")}
    layers = dict.fromkeys(layer for layer, _ in rows)
    cast = int if column == "correct_of_352" else float
    return {layer: (cast(rows[layer, "pca"]), cast(rows[layer, "neuron"])) for layer in layers}


USER_STUDY_CORRECT = _study("correct_of_352")
"""``{layer: (pca, neuron)}``: correct answers of the 352 trials of each cell (Fig. 7)."""

USER_STUDY_ACCURACY = {layer: (pca / TRIALS, neuron / TRIALS) for layer, (pca, neuron) in USER_STUDY_CORRECT.items()}
"""``{layer: (pca, neuron)}``: the published mean accuracy over 22 participants, exactly correct / 352 (Fig. 7)."""

USER_STUDY_SEM = _study("sem")
"""``{layer: (pca, neuron)}``: the standard error of each published accuracy (half Fig. 7's band)."""
