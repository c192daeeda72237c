"""The user study's analysis (Fig. 7): accuracy per layer and basis, paired tests.

The answers come from :func:`helpers.study.logs.load_responses` (re-exported
here), which checks them. Humans are summarised across participants (mean ±
standard error, as in the paper), a machine log across stimuli; the two are
never pooled. Observer labels: ``"human"``, ``"machine"``, or
``"machine:<participant>"`` for each machine log when there are several.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..pipeline import provenance
from .logs import BASES, OBSERVERS, SESSION_COLUMNS, ResponseLogError, load_responses  # noqa: F401  (07's API)

PAIR = ("pca", "neuron")
"""The paired tests compare the paper's two bases; the accuracy table has every basis answered."""


ACCURACY_COLUMNS = ["observer", "layer", "basis", "n", "accuracy", "sem"]


TEST_COLUMNS = ["observer", "layer", "test", "n", "pca", "neuron", "difference", "statistic", "p_value"]


WILCOXON = "Wilcoxon signed-rank (zsplit zeros, normal approximation with tie correction)"


MCNEMAR = "McNemar exact (two-sided binomial test on discordant PC/neuron pairs)"


def per_participant(responses):
    """Accuracy of each participant per layer and basis.

    Returns
    -------
    DataFrame
        Columns observer, participant, layer, basis, n (trials), accuracy.
    """
    cells = responses.groupby(["observer", "participant", "layer", "basis"], observed=True)["correct"]
    return cells.agg(n="count", accuracy="mean").reset_index()


def _observers(responses) -> list[tuple[str, str, pd.DataFrame]]:
    """``(label, kind, rows)``: each machine log on its own, then all humans together."""
    machines = sorted(responses.loc[responses["observer"] == "machine", "participant"].unique())
    groups = [("machine" if len(machines) == 1 else f"machine:{m}", "machine",
               responses[(responses["observer"] == "machine") & (responses["participant"] == m)])
              for m in machines]
    humans = responses[responses["observer"] == "human"]
    return groups + ([("human", "human", humans)] if len(humans) else [])


def _units(rows, kind: str):
    """``(unit, frame)``: per-participant accuracies (humans) or per-stimulus 0/1 outcomes (machine)."""
    if kind == "human":
        return "participant", per_participant(rows)
    return "component", rows.assign(accuracy=rows["correct"].astype(float))


def _sem(values) -> float:
    return values.std(ddof=1) / np.sqrt(len(values))


def accuracy_table(responses):
    """Accuracy per observer, layer and basis: the table behind Fig. 7.

    For ``human`` the unit is the participant: ``n`` participants, ``accuracy``
    the mean of their accuracies, ``sem`` its standard error
    (``std(ddof=1) / sqrt(n)``, NaN for one participant). For a machine log
    the unit is the stimulus: ``n`` stimuli, the fraction answered correctly
    and the standard error of the 0/1 outcomes.

    Returns
    -------
    DataFrame
        Columns observer, layer, basis, n, accuracy, sem; layers in stimuli
        order, bases in the order of ``helpers.bases.KINDS`` (pca before neuron).
    """
    tables = []
    for label, kind, rows in _observers(responses):
        cells = _units(rows, kind)[1].groupby(["layer", "basis"], observed=True)["accuracy"]
        table = cells.agg(n="count", accuracy="mean", sem=_sem).reset_index().assign(observer=label)
        tables.append(table.astype({"layer": str, "basis": str})[ACCURACY_COLUMNS])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ACCURACY_COLUMNS)


def _pairs(rows, kind: str):
    """PCA and neuron outcome side by side: per participant (humans) or per component rank (machine)."""
    unit, values = _units(rows, kind)
    wide = values.pivot_table(index=["layer", unit], columns="basis", values="accuracy", observed=True)
    return wide.reindex(columns=list(PAIR)).dropna().reset_index()


def _wilcoxon(pairs) -> dict:
    """Wilcoxon signed-rank test on per-participant PCA - neuron accuracy."""
    diff = np.round(pairs["pca"] - pairs["neuron"], 12)  # exact ties despite float error
    if len(diff) < 2:
        return {"test": WILCOXON + ": not computed, needs 2 or more participants",
                "statistic": np.nan, "p_value": np.nan}
    result = stats.wilcoxon(diff, zero_method="zsplit", correction=False, method="approx")
    return {"test": WILCOXON, "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def _mcnemar(pairs) -> dict:
    """McNemar's exact test; ``statistic`` is the number of pairs where only the PC was right."""
    pca_only = int(((pairs["pca"] == 1) & (pairs["neuron"] == 0)).sum())
    neuron_only = int(((pairs["pca"] == 0) & (pairs["neuron"] == 1)).sum())
    discordant = pca_only + neuron_only
    p = stats.binomtest(pca_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"test": MCNEMAR, "statistic": float(pca_only), "p_value": float(p)}


def _summary(pairs, test) -> dict:
    return {"n": len(pairs), "pca": pairs["pca"].mean(), "neuron": pairs["neuron"].mean(),
            "difference": (pairs["pca"] - pairs["neuron"]).mean(), **test(pairs)}


def paired_tests(responses):
    """PCA vs neuron accuracy, paired, per layer and over all layers (layer ``"all"``).

    Humans: Wilcoxon signed-rank test of each participant's PCA - neuron
    accuracy (zero differences split between the signs; normal approximation,
    tie-corrected, no continuity correction); overall on each participant's
    mean over layers. A machine log: McNemar's exact test pairing the i-th PC
    with the i-th neuron of a layer; ``statistic`` counts the pairs where only
    the PC was right, ``p_value`` is the two-sided binomial test among the
    discordant pairs (1 when there are none); overall pooled over layers.
    ``p_value`` is NaN when a test cannot be computed; ``test`` says why.

    Returns
    -------
    DataFrame
        Columns observer, layer, test, n (participants or pairs), pca, neuron
        (mean accuracies), difference (mean of PCA - neuron), statistic, p_value.
    """
    rows = []
    for label, kind, group in _observers(responses):
        test = _wilcoxon if kind == "human" else _mcnemar
        pairs = _pairs(group, kind)
        if pairs.empty:  # no layer with answers in both bases
            continue
        for layer, layer_pairs in pairs.groupby("layer", observed=True):
            rows.append({"observer": label, "layer": str(layer), **_summary(layer_pairs, test)})
        overall = pairs.groupby("participant")[list(PAIR)].mean() if kind == "human" else pairs
        rows.append({"observer": label, "layer": "all", **_summary(overall, test)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


STEP = provenance.declare(
    __name__, "07_user_study_analysis", reads=("stimuli", "machine"),
    uses=("model", "layers", "bases", "mis_similarity", "seed"),
    outputs=(provenance.Output("user_study_accuracy.csv"), provenance.Output("user_study_tests.csv"),
             provenance.Output("fig07_user_study",
                               caption="Fig. 7 · user study (machine observer unless people took part)"),
             provenance.Output("user_study_vs_published.csv", when=lambda p: p.published),
             provenance.Output("machine_interpretability.csv", gather="machine_interpretability"),
             provenance.Output("fig_machine_interpretability",
                               caption="Interpretability without people · grid observer and held-out queries")))
"""07 makes no artifact: it draws the study's tables and Fig. 7 from the stimuli, the logs and the machine scores."""
