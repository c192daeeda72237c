"""One function per paper figure (matplotlib); :func:`save` writes PNG and PDF."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

CURVE_STYLE = {
    "pca_pre_relu": dict(color="tab:blue", ls="-", label="PCA (pre-ReLU)"),
    "pca_post_relu": dict(color="tab:blue", ls="--", label="PCA (post-ReLU)"),
    "neuron_pre_relu": dict(color="tab:orange", ls="-", label="neurons (pre-ReLU)"),
}


def save(fig, path) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` and ``<path>.pdf``; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    return out


def _panels(n: int, ncols: int = 4, size=(3.2, 2.8)):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def explained_variance(ratios: dict, thresholds=(0.8, 0.99)):
    """Fig. 5: cumulative explained-variance ratio vs number of basis vectors.

    Parameters
    ----------
    ratios : dict
        ``{layer: {curve: ndarray of shape (d,)}}`` explained-variance ratios
        in descending order, curves named as in ``CURVE_STYLE``.
    thresholds : tuple of float
        Levels whose counts are marked and labelled.
    """
    from .bases import counts

    fig, axes = _panels(len(ratios))
    for ax, (layer, curves) in zip(axes, ratios.items()):
        for curve, ratio in curves.items():
            style = CURVE_STYLE[curve]
            cum = np.cumsum(ratio)
            k = np.arange(1, len(cum) + 1)
            ax.plot(k, cum, color=style["color"], ls=style["ls"], label=style["label"])
            ks = counts(ratio, thresholds)
            ax.scatter(ks, cum[np.array(ks) - 1], color=style["color"], s=14, zorder=3)
            for kk in ks:
                ax.annotate(str(kk), (kk, cum[kk - 1]), textcoords="offset points", xytext=(3, -9),
                            fontsize=7, color=style["color"])
        for t in thresholds:
            ax.axhline(t, color="0.8", lw=0.7, zorder=0)
        ax.set_title(f"{layer} (d = {len(cum)})")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("number of basis vectors")
        ax.set_ylabel("cumulative explained variance")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
