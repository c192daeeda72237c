"""Controls: every yardstick of the paper for untrained networks and against a random basis.

    python -m helpers.controls --profile quick                       # the three stand-ins
    python -m helpers.controls --profile quick --models mini_alexnet -p seed=1

For each model it runs 02, 05, 06–07 and 08 (and whatever they need first: 01, 03, 04) twice, with the
trained network and with ``<model>:untrained`` (its architecture with seeded random weights), each with
the random orthonormal basis among the bases (``bases=<the profile's>,random``), into their own folders
``data/<profile>/controls/<model>/`` and ``figures/<profile>/controls/<model>/`` (the profile's own
artifacts stay as they are; ``-p data_dir=... -p figures_dir=...`` puts them elsewhere), then gathers
their tables into ``figures/<profile>/controls/``, a column ``weights`` saying ``trained`` or ``untrained``:

- ``controls_explained_variance.csv`` (Fig. 5's counts), ``controls_ablation.csv`` (Fig. 6),
  ``controls_machine_interpretability.csv`` (the machine scores), ``controls_compositional.csv`` (08);
- ``controls_summary.csv``: one number per model, weights, basis and yardstick (mean over layers), and
  ``fig_controls`` drawing them; ``fig_controls_machine_<model>`` the machine scores per layer.

The two questions it answers: does "PCs beat neurons" survive when the network is untrained (then it is
a property of the architecture and the data, not of what was learned), and does any basis beat a random one?
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from . import plots
from . import steps as _steps  # noqa: F401  importing the catalogue declares every step
from .pipeline import provenance
from .pipeline.kernels import parse_parameters
from .pipeline.settings import ROOT, SETTINGS, load_profile, slug
from .run import exit_code, run

STANDINS = ("mini_alexnet", "mini_resnet", "mini_vit")


STEPS = ("02", "05", "06", "07", "08")
"""The steps whose tables the controls compare (the runner adds the steps they need first)."""


def tables(p=None) -> dict:
    """``{name: file}``: ``controls_<name>.csv`` gathers each variant's ``figures/<profile>/<model>/<file>``, for
    every table a step declares with ``gather`` (:class:`helpers.pipeline.provenance.Output`); given a profile
    ``p``, of the steps it has (a language model has no 06-08)."""
    return {o.gather: o.name for number, nb in provenance.notebooks().items() for o in nb.outputs
            if o.gather and (p is None or provenance.notebook_applies(p, number))}


ABLATED_SHARE = 0.1
"""The summary's Fig. 6 number: the drop in top-1 accuracy when the top 10 % of a layer's vectors are ablated."""


def variants(models) -> list[tuple[str, str, str]]:
    """``(model, model name to run, weights)`` for each model, trained then untrained."""
    return [v for m in models for v in ((m, m, "trained"), (m, f"{m}:untrained", "untrained"))]


def with_random(bases) -> str:
    """The bases setting of a control run: the given ones (default the paper's), the random basis added."""
    names = [b.strip() for b in (bases.split(",") if isinstance(bases, str) else bases or ("pca", "neuron"))]
    return ",".join([*dict.fromkeys(names), *(() if "random" in names else ("random",))])


def controls_folder(profile: str, settings: dict) -> Path:
    """Where the gathered tables go: the runs' ``figures_dir`` (``figures/<profile>/controls`` by default)."""
    p = load_profile(profile, **{k: v for k, v in settings.items() if k in SETTINGS and k != "model"})
    return p.figures_path.parent


def gather(profile: str, models, settings: dict) -> dict:
    """``{name: DataFrame}`` of :func:`tables` over every variant, with columns ``model`` and ``weights``.

    Raises
    ------
    FileNotFoundError
        For a variant whose table is missing, naming the command that makes it.
    """
    out = {name: [] for name in tables()}
    for model, name, weights in variants(models):
        p = load_profile(profile, **{**{k: v for k, v in settings.items() if k in SETTINGS}, "model": name})
        for table, file in tables(p).items():
            path = p.figure(file)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run python -m helpers.controls --profile {profile} "
                                        f"--models {model} (or helpers.run with -p model={name}).")
            out[table].append(pd.read_csv(path).assign(model=model, weights=weights))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items() if v}


def summary(tables: dict) -> pd.DataFrame:
    """One number per model, weights, basis and yardstick (the mean over layers): columns ``model, weights,
    basis, yardstick, value``.

    Yardsticks: the share of a layer's d needed for 80 % of the variance (Fig. 5, pre-ReLU curves: lower is
    more complete per vector); the drop in top-1 accuracy when the top 10 % of the vectors are ablated
    (Fig. 6, the nearest count of the sweep at or below; higher: the top vectors matter more); each machine
    measure (chance 0.5); the mean IoU of the compositional explanations (08).
    """
    rows = []
    counts = tables["explained_variance"]
    counts = counts[counts.curve.str.endswith("_pre_relu")].assign(basis=lambda t: t.curve.str.split("_").str[0])
    for (model, weights, basis), g in counts.groupby(["model", "weights", "basis"], sort=False):
        rows.append((model, weights, basis, "vectors for 80 % of variance (share of d)", (g.k80 / g.d).mean()))
    ablation = tables["ablation"]
    for (model, weights, basis), g in ablation[ablation.order == "descending"].groupby(["model", "weights", "basis"],
                                                                                     sort=False):
        drops = []
        for layer, curve in g.groupby("layer", sort=False):
            want = max(1, math.floor(ABLATED_SHARE * int(curve.n_ablated.max())))  # the sweep ends at d
            at = curve[curve.n_ablated <= want].sort_values("n_ablated").iloc[-1]
            original = curve[curve.n_ablated == 0].top1.iloc[0]
            drops.append((original - at.top1, at.get("loss_increase", math.nan)))
        rows.append((model, weights, basis, "top-1 drop, top 10 % of vectors ablated",
                     sum(d for d, _ in drops) / len(drops)))
        if "loss_increase" in g and g.loss_increase.notna().any():  # language models
            rows.append((model, weights, basis, "loss increase (nats), top 10 % of vectors ablated",
                         sum(i for _, i in drops) / len(drops)))
    machine = tables.get("machine_interpretability", pd.DataFrame(columns=["model", "weights", "measure", "basis"]))
    for (model, weights, measure, basis), g in machine.groupby(["model", "weights", "measure", "basis"], sort=False):
        rows.append((model, weights, basis, measure, g.score.mean()))
    comp = tables.get("compositional", pd.DataFrame(columns=["model", "weights", "basis", "iou"]))
    for (model, weights, basis), g in comp.groupby(["model", "weights", "basis"], sort=False):
        rows.append((model, weights, basis, "compositional IoU (mean over units)", g.iou.mean()))
    return pd.DataFrame(rows, columns=["model", "weights", "basis", "yardstick", "value"])


def figure(summary_table: pd.DataFrame):
    """``fig_controls``: one panel per yardstick, bars per basis for each model's trained and untrained network."""
    import matplotlib.pyplot as plt
    import numpy as np

    yardsticks = list(dict.fromkeys(summary_table.yardstick))
    groups = list(dict.fromkeys(zip(summary_table.model, summary_table.weights)))
    styles = plots._styles(summary_table)
    ncols = min(3, len(yardsticks))
    nrows = math.ceil(len(yardsticks) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * max(3.4, 0.8 * len(groups) + 0.8), 3.1 * nrows),
                             squeeze=False)
    width = 0.8 / max(1, len(styles))
    for ax, yardstick in zip(axes.flat, yardsticks):
        rows = summary_table[summary_table.yardstick == yardstick]
        for i, (basis, style) in enumerate(styles.items()):
            values = [rows[(rows.model == m) & (rows.weights == w) & (rows.basis == basis)].value for m, w in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(styles) - 1) / 2) * width,
                   [v.iloc[0] if len(v) else np.nan for v in values], width, **style)
        if "score" in yardstick or "observer" in yardstick or "queries" in yardstick:
            ax.axhline(0.5, color="0.5", ls=":", lw=1)
        ax.set_title(yardstick, fontsize=8)
        ax.set_xticks(range(len(groups)), [f"{m}\n{w}" for m, w in groups], fontsize=6, rotation=30, ha="right")
    for ax in axes.flat[len(yardsticks):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def report(profile: str, models, settings: dict) -> Path:
    """Gather the variants' tables (runs with ``settings``: its ``figures_dir`` and ``data_dir`` are theirs) into
    the controls folder, with the summary and figures; returns the folder."""
    folder = controls_folder(profile, settings)
    folder.mkdir(parents=True, exist_ok=True)
    tables = gather(profile, models, settings)
    for name, table in tables.items():
        table.to_csv(folder / f"controls_{name}.csv", index=False)
    table = summary(tables)
    table.to_csv(folder / "controls_summary.csv", index=False)
    plots.save(figure(table), folder / "fig_controls")
    for model, rows in tables.get("machine_interpretability", pd.DataFrame(columns=["model"])).groupby("model", sort=False):
        plots.save(plots.machine_interpretability(rows), folder / f"fig_controls_machine_{slug(model)}")
    import matplotlib.pyplot as plt

    plt.close("all")
    return folder


def run_controls(profile: str = "quick", models=STANDINS, parameters: dict | None = None, say=None) -> Path:
    """Run every variant's steps (:data:`STEPS`, artifacts reused while current), then :func:`report`."""
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    settings = dict(parameters or {})
    if "model" in settings:
        raise ValueError("-p model=... is not a control setting; name the networks with --models.")
    settings["bases"] = with_random(settings.get("bases"))
    settings.setdefault("data_dir", str(ROOT / "data" / profile / "controls"))
    settings.setdefault("figures_dir", str(ROOT / "figures" / profile / "controls"))
    for model, name, weights in variants(models):
        say(f"controls: {name} ({weights})")
        run(profile, STEPS, {**settings, "model": name}, say=say)
    folder = report(profile, models, settings)
    say(f"controls: tables and figures in {folder}")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.controls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="smoke, quick or paper (default: quick)")
    parser.add_argument("--models", default=",".join(STANDINS), help="comma-separated networks (default: the stand-ins)")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="a setting for every run, repeatable (e.g. -p seed=1)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return exit_code(lambda: run_controls(args.profile, models, parse_parameters(args.parameter)))


if __name__ == "__main__":
    sys.exit(main())
