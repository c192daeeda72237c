"""The paper's published numbers (Dey et al., TMLR 2025), to print beside reproduced ones.
"""
from __future__ import annotations

MODEL = "alexnet"
"""The model the published numbers are of (torchvision's AlexNet, ImageNet weights)."""


def applies(model: str) -> bool:
    """Whether the paper's numbers are of ``model`` (the notebooks then print them beside the reproduced ones)."""
    return model == MODEL


ALEXNET_TOP1 = 0.5652
"""Top-1 accuracy of torchvision's AlexNet (IMAGENET1K_V1) on ImageNet val."""


LAYER_DIMS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256,
              "fc1": 4096, "fc2": 4096, "fc3": 1000}


EXPLAINED_VARIANCE_COUNTS = {
    # layer: {curve: (k80, k99)}, the labels printed on Fig. 5
    "conv1": {"pca_pre_relu": (11, 36), "pca_post_relu": (24, 57), "neuron_pre_relu": (40, 60)},
    "conv2": {"pca_pre_relu": (14, 103), "pca_post_relu": (90, 176), "neuron_pre_relu": (101, 184)},
    "conv3": {"pca_pre_relu": (32, 232), "pca_post_relu": (200, 360), "neuron_pre_relu": (244, 373)},
    "conv4": {"pca_pre_relu": (43, 219), "pca_post_relu": (145, 247), "neuron_pre_relu": (183, 251)},
    "conv5": {"pca_pre_relu": (33, 195), "pca_post_relu": (129, 246), "neuron_pre_relu": (187, 251)},
    "fc1": {"pca_pre_relu": (42, 723), "pca_post_relu": (1006, 3763), "neuron_pre_relu": (2782, 3959)},
    "fc2": {"pca_pre_relu": (35, 593), "pca_post_relu": (1077, 3562), "neuron_pre_relu": (2533, 3682)},
    "fc3": {"pca_pre_relu": (37, 624), "neuron_pre_relu": (709, 980)},
}


USER_STUDY_ACCURACY = {
    # layer: (PCA, neuron), mean over 22 participants read off Fig. 7 (approximate)
    "conv1": (0.93, 0.90), "conv2": (0.93, 0.82), "conv3": (0.88, 0.85), "conv4": (0.84, 0.81),
    "conv5": (0.84, 0.79), "fc1": (0.88, 0.71), "fc2": (0.90, 0.67), "fc3": (0.85, 0.82),
}


USER_STUDY_PARTICIPANTS = 22


def counts_beside_paper(table):
    """The reproduced ``explained_variance_counts`` table with the paper's counts beside it."""
    import pandas as pd

    paper = [{"layer": layer, "curve": curve, "paper_k80": k80, "paper_k99": k99}
             for layer, curves in EXPLAINED_VARIANCE_COUNTS.items()
             for curve, (k80, k99) in curves.items()]
    out = table.merge(pd.DataFrame(paper), on=["layer", "curve"], how="left")
    return out.astype({"paper_k80": "Int64", "paper_k99": "Int64"})  # counts, blank where the paper has none


def user_study_beside_paper(table):
    """The reproduced ``user_study_accuracy`` table with the paper's mean accuracy beside it."""
    import pandas as pd

    paper = [{"layer": layer, "basis": basis, "paper_accuracy": acc}
             for layer, pair in USER_STUDY_ACCURACY.items() for basis, acc in zip(("pca", "neuron"), pair)]
    return table.merge(pd.DataFrame(paper), on=["layer", "basis"], how="left")
