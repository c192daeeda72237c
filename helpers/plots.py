"""One function per paper figure (matplotlib); :func:`save` writes PNG and PDF.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

COLOURS = {"pca": "tab:blue", "neuron": "tab:orange", "ica": "tab:green", "nmf": "tab:purple", "sae": "tab:red", "random": "tab:gray"}
"""One colour per basis, in every figure."""


def _label(basis: str) -> str:
    from .bases.kinds import KINDS

    return KINDS[basis].label if basis in KINDS else basis


def curve_style(curve: str) -> dict:
    """Colour, line and label of a Fig. 5 curve ``<basis>_<pre|post>_relu``."""
    basis, stage = curve.split("_")[0], curve.split("_")[1]
    return dict(color=COLOURS.get(basis, "0.3"), ls="--" if basis == "pca" and stage == "post" else "-",
                label=f"{_label(basis)} ({stage}-ReLU)")


def save(fig, path) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` and ``<path>.pdf``; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_name(f"{path.name}.png"), path.with_name(f"{path.name}.pdf")]  # layer names hold dots
    fig.savefig(out[0], dpi=150, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    return out


def _title(layer: str, d: int, width: int = 26) -> str:
    """A panel title: the layer name broken at dots into lines of about ``width`` characters, and d."""
    lines, line = [], ""
    for part in layer.split("."):
        if line and len(line) + 1 + len(part) > width:
            lines.append(line + ".")
            line = part
        else:
            line = f"{line}.{part}" if line else part
    return "\n".join([*lines, f"{line} (d = {d})"])


def _panels(n: int, ncols: int = 4, size=(3.2, 2.8)):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def explained_variance(curves: dict, thresholds=(0.8, 0.99), published=None):
    """Fig. 5: variance explained by the top k basis vectors vs k, every basis in one panel per layer.

    Parameters
    ----------
    curves : dict
        ``{layer: {curve: ndarray of shape (K,)}}``: R² of the reconstruction
        from the top k vectors, k = 1 … K (:func:`helpers.bases.explained_curve`;
        for PCs the cumulative explained-variance ratio), curves named
        ``<basis>_<pre|post>_relu``.
    thresholds : tuple of float
        Levels whose counts are marked and labelled.
    published : DataFrame, optional
        :func:`helpers.reference.explained_variance`: the paper's curves, drawn
        beside the reproduced ones of the layers both have (:mod:`helpers.published`).
    """
    from .bases.curves import curve_counts
    from .published import EXPLAINED_VARIANCE_CAPTION, draw_explained_variance

    fig, axes = _panels(len(curves))
    drawn = 0
    for ax, (layer, found) in zip(axes, curves.items()):
        styles = {curve: curve_style(curve) for curve in found}
        for curve, values in found.items():
            style = styles[curve]
            k = np.arange(1, len(values) + 1)
            ax.plot(k, values, **style)
            ks = [kk for kk in curve_counts(values, thresholds) if kk is not None]
            ax.scatter(ks, values[np.array(ks, int) - 1], color=style["color"], s=14, zorder=3)
            for kk in ks:
                ax.annotate(str(kk), (kk, values[kk - 1]), textcoords="offset points", xytext=(3, -9),
                            fontsize=7, color=style["color"])
        if published is not None:
            drawn += draw_explained_variance(ax, published[published["layer"] == layer], styles)
        for t in thresholds:
            ax.axhline(t, color="0.8", lw=0.7, zorder=0)
        ax.set_title(_title(layer, len(found["pca_pre_relu"])), fontsize=9)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("number of basis vectors")
        ax.set_ylabel("variance explained by the top k")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if drawn:
        _caption(fig, EXPLAINED_VARIANCE_CAPTION)
    return fig


def basis_grids(layer: str, shown: dict):
    """Figs. 2–4, 16–20: grids of the top vectors of each basis of one layer, one column per basis.

    ``shown``: ``{basis: [dicts from Visualizer.grid (image, label)]}`` (the paper: PCs left, neurons right).
    """
    from .bases.kinds import KINDS

    shown = {b: g for b, g in shown.items() if g}
    rows = max(len(g) for g in shown.values())
    h, w = next(iter(shown.values()))[0]["image"].shape[:2]
    wide = w > 3 * h  # a text grid (a wide table of token contexts): a wider column, room for each title
    size = (len(shown) * (4.2 + 4.8 * wide), rows * ((4.2 + 4.8 * wide) * h / w + 0.3 * wide) + 0.6)
    fig, axes = plt.subplots(rows, len(shown), figsize=size, squeeze=False)
    for col, (basis, grids) in enumerate(shown.items()):
        for row in range(rows):
            ax = axes[row, col]
            ax.axis("off")
            if row < len(grids):
                image = grids[row]["image"]
                ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
                ax.set_title(grids[row]["label"].split(" ", 1)[1], fontsize=8)
        title = {"pca": "principal components", "neuron": "neurons"}.get(basis, KINDS[basis].label
                                                                          if basis in KINDS else basis)
        axes[0, col].text(0.5, 1.25, title, transform=axes[0, col].transAxes, ha="center")
    fig.suptitle(f"{layer}: targets along each basis vector (columns, low to high), nearest "
                 f"{'token contexts (the token highlighted)' if wide else 'patches'} (rows)",
                 fontsize=9, y=1.0)
    fig.tight_layout()
    return fig


def toy_distance_vs_activation(toy: dict):
    """Fig. 12: activation maximisation drifts off V1; distance minimisation stays on it."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharex=True, sharey=True)
    for ax, key, title in ((axes[0], "activation_max", "activation maximisation"),
                           (axes[1], "distance_min", "distance minimisation")):
        ax.scatter(*toy["data"].T, s=3, color="0.75", label="activations")
        mean, v1 = toy["mean"], toy["v1"]
        span = np.abs(toy["data"] - mean).max()
        ax.plot(*np.stack([mean - span * v1, mean + span * v1]).T, color="k", lw=1, label="V1")
        if key == "distance_min":
            ax.scatter(*toy["targets"].T, marker="x", color="k", s=25, label="targets")
        ax.scatter(*toy[key].T, color="tab:blue", s=28, zorder=3, label="visualisations")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def ablation(table, published=None, measure: str = "top1"):
    """Fig. 6: top-1 accuracy vs number of ablated basis vectors, one panel per layer.

    ``table``: ``ablation.csv``'s columns (a language model's loss too: ``measure="loss"``); x linear up to 16, then log.
    ``published`` (:func:`helpers.reference.ablation`): the paper's curves, drawn through their stored vertices beside
    the reproduced ones of the layers both have (:mod:`helpers.published`), with a caption.
    """
    from .published import ABLATION_CAPTION, draw_ablation

    layers = list(dict.fromkeys(table["layer"]))
    fig, axes = _panels(len(layers))
    drawn, loss = 0, measure == "loss"
    for ax, layer in zip(axes, layers):
        rows = table[table["layer"] == layer]
        original = rows[rows["n_ablated"] == 0]["top1"].iloc[0]
        styles = {}
        for order in ("descending", "ascending"):
            for basis in dict.fromkeys(rows["basis"]):
                curve = rows[(rows["basis"] == basis) & (rows["order"] == order)].sort_values("n_ablated")
                styles[basis, order] = dict(color=COLOURS.get(basis, "0.3"), ls="-" if order == "descending" else "--",
                                            label=f"{_label(basis)}, {order}")
                ax.plot(curve["n_ablated"], curve[measure], **styles[basis, order])
        shown = published[published["layer"] == layer] if published is not None else None
        if shown is not None:
            drawn += draw_ablation(ax, shown, styles)
            original = max(original, float(shown["top1"].max()) if len(shown) else 0)
        ax.axhline(rows[rows["n_ablated"] == 0][measure].iloc[0], color="0.4", ls=":",
                   label="original loss" if loss else "original accuracy")
        most = int(rows["n_ablated"].max())
        pcs = rows[rows["basis"] == "pca"]["n_ablated"]
        d = int(pcs.max()) if len(pcs) else most
        ax.set_xscale("symlog", linthresh=min(16, most))
        ax.set_xlim(0, most)
        lo, hi = (rows["loss"].min(), rows["loss"].max() + 1e-3) if loss else (0, min(1, max(original, 0.01) * 1.15))
        ax.set_ylim(lo - 0.05 * (hi - lo) * loss, hi + 0.05 * (hi - lo) * loss)  # a loss: each layer's own range
        ax.set_title(_title(layer, d), fontsize=9)
        ax.set_xlabel("number of ablated basis vectors")
        ax.set_ylabel("next-token loss (nats)" if loss else f"{'next-token ' * ('loss' in table)}top-1 accuracy")
    axes[0].legend(fontsize=6, loc="upper left" if loss else "lower left")
    fig.tight_layout()
    if drawn:
        _caption(fig, ABLATION_CAPTION)
    return fig


def _styles(table) -> dict:
    """``{basis: dict(color, label)}`` for the bases in ``table["basis"]``, in the order of ``bases.KINDS``."""
    from .bases.kinds import KINDS

    found = set(table["basis"])
    order = [b for b in KINDS if b in found] + sorted(found - set(KINDS))
    return {b: dict(color=COLOURS.get(b, "0.3"), label=_label(b)) for b in order}


def user_study(table, published=None):
    """Fig. 7: user-study accuracy per layer and basis (PCA vs neurons in the paper), ± one standard error.

    Parameters
    ----------
    table : DataFrame
        Columns of ``user_study_accuracy.csv`` (observer, layer, basis, n,
        accuracy, sem); one panel per observer, layers in table order.
    published : DataFrame or dict, optional
        :func:`helpers.reference.user_study` (or ``{layer: (pca, neuron)}``
        accuracies): the paper's points, dashed, ± their standard error, on
        every panel for the layers the table has (:mod:`helpers.published`).
    """
    from .published import draw_user_study
    from .reference import USER_STUDY_PARTICIPANTS

    observers = list(dict.fromkeys(table["observer"]))
    if not observers:
        raise ValueError("the accuracy table is empty: there are no responses to plot.")
    layers = list(dict.fromkeys(table["layer"]))
    x = {layer: i for i, layer in enumerate(layers)}
    lowest = (table["accuracy"] - table["sem"].fillna(0)).min()
    fig, axes = _panels(len(observers), size=(max(3.2, 0.6 * len(layers) + 1.4), 3.0))
    for ax, observer in zip(axes, observers):
        rows = table[table["observer"] == observer]
        for basis, style in _styles(table).items():
            curve = rows[rows["basis"] == basis]
            xs, acc, sem = curve["layer"].map(x), curve["accuracy"], curve["sem"].fillna(0)
            ax.plot(xs, acc, marker="o", ms=4, clip_on=False, **style)
            ax.fill_between(xs, (acc - sem).clip(0, 1), (acc + sem).clip(0, 1), color=style["color"], alpha=0.2,
                            lw=0)
        if published is not None:
            draw_user_study(ax, published, x, _styles(table), USER_STUDY_PARTICIPANTS)
        ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
        n = int(rows["n"].max())
        ax.set_title(f"{observer} ({n} {'participants' if observer == 'human' else 'stimuli per cell'})")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_xlim(-0.3, len(layers) - 0.7)
        ax.set_ylim(min(0.4, np.floor(lowest * 10) / 10), 1.0)
        ax.set_xlabel("layer")
        ax.set_ylabel("accuracy (± s.e.)")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    _caption(fig, "Each trial: one basis vector's grid in its true column order and shuffled; accuracy = share of "
                  "trials where the ordered grid was picked. The machine observer picks the grid whose adjacent "
                  "columns look more alike, which grids whose adjacent columns share patches give away whatever the "
                  "vector shows: fig_machine_interpretability has measures that do not.")
    return fig


def _caption(fig, text: str) -> None:
    """A caption under the figure's panels (saved with ``bbox_inches="tight"``)."""
    import textwrap

    width = max(60, int(fig.get_figwidth() * 14))
    fig.text(0.01, 0, textwrap.fill(text, width), fontsize=7, ha="left", va="top", color="0.25")


def machine_interpretability(table):
    """Interpretability without people: each measure's mean over basis vectors per layer and basis, with its
    95 % bootstrap interval over vectors; chance is 0.5.

    ``table``: columns of ``machine_interpretability.csv`` (measure, layer, basis, n, score, ci_low, ci_high);
    one panel per measure. With a ``weights`` column (the controls), untrained networks are drawn dashed.
    """
    measures = list(dict.fromkeys(table["measure"]))
    if not measures:
        raise ValueError("the machine-interpretability table is empty: run 06_user_study first.")
    layers = list(dict.fromkeys(table["layer"]))
    x = {layer: i for i, layer in enumerate(layers)}
    weights = list(dict.fromkeys(table["weights"])) if "weights" in table else [None]
    fig, axes = _panels(len(measures), ncols=3, size=(max(3.4, 0.55 * len(layers) + 1.6), 3.0))
    for ax, measure in zip(axes, measures):
        rows = table[table["measure"] == measure]
        for basis, style in _styles(table).items():
            for w in weights:
                curve = rows[(rows["basis"] == basis) & ((rows["weights"] == w) if w is not None else True)]
                if not len(curve):
                    continue
                xs = curve["layer"].map(x)
                label = style["label"] if w in (None, weights[0]) else f"{style['label']}, {w}"
                ax.plot(xs, curve["score"], marker="o", ms=3, color=style["color"], label=label,
                        ls="--" if w == "untrained" else "-", clip_on=False)
                ax.fill_between(xs, curve["ci_low"], curve["ci_high"], color=style["color"], alpha=0.15, lw=0)
        ax.axhline(0.5, color="0.5", ls=":", lw=1, label="chance")
        ax.set_title(measure, fontsize=8)
        ax.set_xticks(range(len(layers)), layers, fontsize=7, rotation=45 if len(layers) > 6 else 0)
        ax.set_xlim(-0.3, len(layers) - 0.7)
        ax.set_ylim(min(0.3, float(np.nanmin(rows["ci_low"].fillna(rows["score"]))) - 0.02), 1.02)
        ax.set_ylabel("score (95 % CI over vectors)", fontsize=7)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    _caption(fig, "Grid observer: Fig. 7's ordered-vs-shuffled choice by column smoothness, on grids drawn as the "
                  "paper draws them (allow), with no patch in two adjacent columns (patch) and with no patch twice "
                  "in a grid (grid). Held-out queries: does a held-out patch from the top (bottom) of the vector's "
                  "codes look more like the top (bottom) references than the others (after Zimmermann et al. "
                  "2024)? Chance is 0.5; the random orthonormal basis is the baseline.")
    return fig


def study_trial(folder, trial: dict, instruction: str):
    """Fig. 14: one study trial as a participant sees it (instruction, two grids, ↑ / ↓).

    ``folder`` is the stimuli artifact and ``trial`` an item of ``study.trial_list``.
    """
    import textwrap

    from PIL import Image

    images = [np.asarray(Image.open(Path(folder) / trial[side])) for side in ("top", "bottom")]
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(2, 1, figsize=(7, 7 * 2 * h / w + 1.2))
    fig.suptitle(textwrap.fill(instruction, 95), fontsize=8, x=0.02, ha="left")
    for ax, image, arrow in zip(axes, images, ("↑", "↓")):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(arrow, rotation=0, fontsize=16, labelpad=14, va="center")
    fig.tight_layout()
    return fig


def compositional_iou(table):
    """IoU of the best formula per layer and basis, ± one standard error (Fig. 7's layout).

    ``table``: the columns of ``compositional_explanations.csv``; a PC's two signs are two units.
    """
    layers = list(dict.fromkeys(table["layer"]))
    fig, ax = plt.subplots(figsize=(max(3.6, 0.7 * len(layers) + 1.6), 3.0))
    for basis, style in _styles(table).items():
        g = table[table["basis"] == basis].groupby("layer", sort=False)["iou"]
        mean, sem = g.mean().reindex(layers), g.sem().reindex(layers).fillna(0)
        ax.plot(range(len(layers)), mean, marker="o", ms=4, clip_on=False, **style)
        ax.fill_between(range(len(layers)), mean - sem, mean + sem, color=style["color"], alpha=0.2, lw=0)
    ax.set_xticks(range(len(layers)), [_title(layer, 0).rsplit(" (", 1)[0] for layer in layers], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("IoU of the best formula (± s.e.)")
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def compositional_iou_by_length(table, lengths):
    """Mean IoU of the best formula against the maximum formula length, one panel per layer.

    ``table``: ``units.csv`` rows with ``iou_max_length_<k>`` columns for ``k`` in ``lengths``.
    """
    layers = list(dict.fromkeys(table["layer"]))
    fig, axes = _panels(len(layers), size=(2.8, 2.5))
    for ax, layer in zip(axes, layers):
        rows = table[table["layer"] == layer]
        for basis, style in _styles(table).items():
            cols = rows[rows["basis"] == basis][[f"iou_max_length_{k}" for k in lengths]]
            sem = cols.sem().fillna(0).to_numpy()
            ax.errorbar(list(lengths), cols.mean().to_numpy(), yerr=sem, marker="o", ms=3, capsize=2, **style)
        ax.set_title(_title(layer, 0).rsplit(" (", 1)[0], fontsize=8)
        ax.set_xticks(list(lengths))
        ax.set_xlabel("max. formula length")
        ax.set_ylabel("mean IoU")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def compositional_examples(units: list):
    """Units with images: the unit's mask (red outline) and the formula's mask (blue), formula and IoU above.

    ``units``: dicts with ``title`` and ``images`` (list of (H, W, C) uint8),
    ``masks`` and ``formula_masks`` (lists of (h, w) bool at the mask resolution).
    """
    ncols = max(len(u["images"]) for u in units)
    fig, axes = plt.subplots(len(units), ncols, figsize=(1.6 * ncols, 1.9 * len(units)), squeeze=False)
    for row, u in zip(axes, units):
        for ax, image, mask, fmask in zip(row, u["images"], u["masks"], u["formula_masks"]):
            H, W = image.shape[:2]
            ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", extent=(0, W, H, 0))
            h, w = mask.shape
            extent = (0, W, H, 0)
            ax.imshow(np.ma.masked_where(~fmask, fmask), cmap="winter", alpha=0.45, extent=extent,
                      interpolation="nearest")
            if mask.any():
                ax.contour(np.linspace(0, W, w), np.linspace(0, H, h), mask.astype(float), levels=[0.5],
                           colors="red", linewidths=1)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_title(u["title"], fontsize=7, loc="left")
    fig.tight_layout()
    return fig
