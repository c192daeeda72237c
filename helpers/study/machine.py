"""Interpretability measured without people (06 writes it, 07 tabulates it), per studied basis vector:

- the grid observer (:mod:`.observers`) on ordered-vs-shuffled grids drawn as the paper draws them
  (``adjacent_repeats="allow"``), with no patch in two adjacent columns (``"patch"``) and with no patch in
  two columns (``"grid"``): the first can be won by smoothness alone when adjacent columns share their
  nearest patches, the second lost by alternation (A, B, A, B, … where few patches are near);
- the held-out-query score (:mod:`.mis`) in each difficulty band of ``mis_bands``.

The top ``n_study`` vectors of every fitted basis of every layer are scored, and those of the random
orthonormal basis as the baseline (the one 02 fits with ``bases=...,random``, else the same made here from
the PCA's moments). Both tables are one artifact, ``machine/`` (``grids.csv`` and ``mis.csv``), keyed by the
settings, the sample, the bases and the index.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..bases.kinds import KINDS
from ..bases.rotation import RandomBasis
from ..grids.visualize import Displayed, patch_grid
from ..models.receptive import crop
from ..models.language import images_only
from ..pipeline import costs, provenance, store
from . import mis
from .observers import choose
from .stimuli import _rng, shuffle_columns

MADE_BY = "06_user_study (python -m helpers.run --only 06)"



GRID_SETTINGS = ("allow", "patch", "grid")
"""The grid observer is run on grids drawn with each of these ``adjacent_repeats``."""


def machine_key(p) -> dict:
    """What profile ``p``'s machine scores are made from: their settings (the α actually used), the sample
    (ranges of the grids' targets), the bases and the index (the patches and their codes). The one key."""
    params = {"layers": list(p.layers), "bases": list(p.bases), "n_study": p.n_study, "seed": p.seed,
              "n_targets": p.n_targets, "n_neighbours": p.n_neighbours, "thumb": p.thumb,
              "token_margin": float(p.token_margin), "grid_settings": list(GRID_SETTINGS), "baseline": "random",
              "similarity": p.mis_similarity, "alpha": mis.alpha_for(p.mis_similarity, p.mis_alpha),
              "bands": [float(q) for q in p.mis_bands], "tasks": p.mis_tasks, "references": p.mis_references}
    return provenance.key(__name__, params, {a: provenance.require(p, a)["hash"] for a in ("sample", "bases", "index")})


def stored_vectors(index, chunk: int = 65536):
    """Yield the centred activation vectors an index holds, ``chunk`` rows at a time (float32 (n, d)).

    Memory: one chunk. An IVF index gets its direct map first (faiss cannot reconstruct one without it).
    """
    try:
        import faiss

        if isinstance(index, faiss.Index) and not isinstance(index, faiss.IndexFlat):
            faiss.extract_index_ivf(index).make_direct_map()
    except (ImportError, RuntimeError):
        pass
    for start in range(0, index.ntotal, chunk):
        yield np.asarray(index.reconstruct_n(start, min(chunk, index.ntotal - start)), np.float32)


def with_baseline(vis, layer: str) -> dict:
    """``vis.layer(layer)``, its bases joined by the random orthonormal baseline (seeded by the profile) when 02
    did not fit it, with its projection ranges (one pass over the sample)."""
    from ..grids.visualize import projection_range
    from ..sampling import open_sample

    info = vis.layer(layer)
    if "random" not in info["bases"]:
        info["bases"]["random"] = RandomBasis.like(info["bases"]["pca"], seed=vis.p.seed)
        X, _ = open_sample(vis.p.artifact("sample"), layer, vis.keys.get("sample"))
        info["ranges"]["random"] = projection_range(X, info["bases"]["random"])
    return info


def layer_codes(vis, layer: str, n: int) -> dict:
    """``{basis: codes}`` of the top ``min(n, K)`` vectors of each basis on every indexed patch of a layer.

    A code is ``basis.transform(x)`` less its sample mean (``code_mean_``), ``x`` an indexed vector plus the
    sample mean it was centred with. Returns float64 arrays of shape (n_patches, min(n, K)). Memory: the
    codes, plus one chunk of vectors.
    """
    info = with_baseline(vis, layer)
    bases = info["bases"]
    mean = np.asarray(bases["pca"].mean_, np.float64)
    parts = {b: [] for b in bases}
    for chunk in stored_vectors(info["index"]):
        x = chunk.astype(np.float64) + mean
        for b, basis in bases.items():
            k = min(n, len(basis.components_))
            parts[b].append(basis.transform(x)[:, :k] - np.asarray(basis.code_mean_, np.float64)[:k])
    return {b: np.concatenate(c) for b, c in parts.items()}


def mis_rows(vis, layer: str, embed: mis.Embedder, alpha, progress=None) -> list[dict]:
    """The held-out-query score of each studied vector of each basis of one layer, in every band.

    The patches of every task of the layer are cut once (each image decoded once) and embedded once.
    Memory: the layer's codes (:func:`layer_codes`) and the embeddings of the patches its tasks use.
    """
    p = vis.p
    loc = vis.layer(layer)["loc"]
    tasks, wanted = [], []
    for basis, codes in layer_codes(vis, layer, p.n_study).items():
        for j in range(codes.shape[1]):
            for q in p.mis_bands:
                rng = _rng(p.seed, "mis", layer, basis, j, q)
                t = mis.band_tasks(codes[:, j], q, p.mis_tasks, p.mis_references, rng)
                tasks.append((basis, j, q, t))
                wanted += [t["top"].ravel(), t["bottom"].ravel()]
    used = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
    field = vis.fields[layer]
    shown = Displayed(vis.images, loc[used, 0], p.num_workers)
    patches = np.stack([crop(shown.display(i), None if field is None else field.box(int(y), int(x)), p.thumb)
                        for i, y, x in loc[used]]) if len(used) else np.zeros((0, p.thumb, p.thumb, 1), np.uint8)
    E = embed.embed(patches)
    where = np.full(len(loc), -1, np.int64)
    where[used] = np.arange(len(used))
    rows = []
    for basis, j, q, t in tasks:
        delta = mis.deltas(E, {k: where[v] for k, v in t.items()}, embed.kind)
        rows.append({"layer": layer, "basis": basis, "component": j + 1, "band": float(q), "n_tasks": len(delta),
                     "delta": float(delta.mean()), "score": mis.score(delta, alpha), "hard": mis.score(delta, None)})
        if progress is not None:
            progress.update(1)
    return rows


def grid_rows(vis, layer: str, settings=GRID_SETTINGS) -> list[dict]:
    """The grid observer's answer for each studied vector of each basis of one layer, for grids drawn with each
    ``adjacent_repeats`` of ``settings``: ordered vs columns shuffled (a seeded permutation, never the identity),
    the ordered one on top or bottom at random; ``correct`` is 1, 0, or 0.5 for two identical images."""
    p = vis.p
    rows = []
    for setting in settings:
        v = copy.copy(vis)  # shares the layer's index, bases and ranges
        v.p = dataclasses.replace(p, adjacent_repeats=setting)
        for basis, b in with_baseline(v, layer)["bases"].items():
            planned = v.plan(layer, basis, range(min(p.n_study, len(b.components_))))
            shown = Displayed(v.images, np.concatenate([g["locs"][..., 0].ravel() for g in planned]), p.num_workers)
            for j, g in enumerate(planned):
                sid = f"{layer}-{basis}-{j + 1:02d}"
                ordered = patch_grid(shown, g["locs"], v.fields[layer], p.thumb)
                shuffled, _ = shuffle_columns(ordered, p.n_targets, _rng(p.seed, "columns", sid))
                top = "ordered" if _rng(p.seed, "position", sid).random() < 0.5 else "shuffled"
                pair = (ordered, shuffled) if top == "ordered" else (shuffled, ordered)
                answer = choose(pair[0], pair[1], p.n_targets, p.n_neighbours)
                right = "top" if top == "ordered" else "bottom"
                correct = 0.5 if (ordered == shuffled).all() else float(answer == right)
                rows.append({"layer": layer, "basis": basis, "component": j + 1, "grids": setting,
                             "correct": correct})
    return rows


def make_machine(p) -> dict:
    """The machine scores of profile ``p`` (reused when current); returns the sidecar."""
    from ..grids.visualize import visualizer_for

    key = machine_key(p)
    return write_machine(visualizer_for(p), key, profile=p.name, device=p.device)


def write_machine(vis, key: dict, profile: str = "", device=None) -> dict:
    """Write the ``machine`` artifact of ``vis.p`` (reused while current; a layer done before an interruption
    is kept). Returns its sidecar."""
    p = vis.p
    folder = p.artifact("machine")
    alpha = mis.alpha_for(p.mis_similarity, p.mis_alpha)
    with store.Build(folder, key, MADE_BY, profile=profile) as b:
        if b.current:
            return b.meta
        embed = mis.embedder(p.mis_similarity, p, device)
        done = list(b.progress.get("layers_done", []))
        for layer in tqdm(p.layers, desc="machine scores per layer"):
            if layer in done:
                continue
            n = sum(min(p.n_study, len(x.components_)) for x in with_baseline(vis, layer)["bases"].values()) \
                * len(p.mis_bands)
            with tqdm(total=n, desc=f"{layer}: held-out queries", leave=False) as bar:
                scores = pd.DataFrame(mis_rows(vis, layer, embed, alpha, bar))
            grids = pd.DataFrame(grid_rows(vis, layer))
            for name, table in (("mis", scores), ("grids", grids)):
                with store.atomic(b.partial / f"{layer}_{name}.csv") as tmp:
                    table.to_csv(tmp, index=False)
            done.append(layer)
            b.save_progress(summary=f"{len(done)} of {len(p.layers)} layers", layers_done=done)
        for name in ("mis", "grids"):
            table = pd.concat([pd.read_csv(b.partial / f"{layer}_{name}.csv") for layer in p.layers])
            with store.atomic(b.partial / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
            for layer in p.layers:
                (b.partial / f"{layer}_{name}.csv").unlink()
        return b.commit(["mis.csv", "grids.csv"], extra={"similarity": embed.name, "alpha": alpha})


def load_machine(p, key: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(mis, grids)`` tables of the profile's machine artifact (refused when stale or damaged)."""
    folder = p.artifact("machine")
    store.read_meta(folder, key, MADE_BY)
    try:
        return tuple(pd.read_csv(folder / f"{name}.csv") for name in ("mis", "grids"))
    except (OSError, ValueError) as e:
        raise store.CorruptArtifactError(f"{folder} is corrupt ({type(e).__name__}: {e}); delete it and rerun "
                                         f"{MADE_BY}.") from None


def bootstrap_ci(values, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over ``values`` (vectors), seeded: ``(low, high)``."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng([seed, len(values)])
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return tuple(float(v) for v in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


TABLE_COLUMNS = ["measure", "layer", "basis", "n", "score", "ci_low", "ci_high"]


def interpretability_table(scores: pd.DataFrame, grids: pd.DataFrame, similarity: str, seed: int = 0):
    """Per layer and basis, each measure's mean over vectors with a 95 % bootstrap interval over vectors.

    Measures: ``grid observer (<setting>)`` for each grid setting and ``held-out queries (<similarity>,
    top/bottom <q>)`` for each band. Returns a DataFrame of :data:`TABLE_COLUMNS`.
    """
    rows = []
    parts = [(f"grid observer (adjacent repeats: {s})", g, "correct") for s, g in grids.groupby("grids", sort=False)]
    parts += [(f"held-out queries ({similarity}, top/bottom {100 * q:g} %)", g, "score")
              for q, g in scores.groupby("band", sort=True)]
    order = [b for b in KINDS if b in set(scores.basis) | set(grids.basis)]
    for measure, table, column in parts:
        for (layer, basis), g in table.groupby(["layer", "basis"], sort=False):
            low, high = bootstrap_ci(g[column], seed)
            rows.append({"measure": measure, "layer": layer, "basis": basis, "n": len(g),
                         "score": float(g[column].mean()), "ci_low": low, "ci_high": high})
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if len(out):
        out["measure"] = pd.Categorical(out["measure"], [m for m, _, _ in parts])
        out["basis"] = pd.Categorical(out["basis"], order)
        out = out.sort_values(["measure", "basis"], kind="stable").astype({"measure": str, "basis": str})
    return out.reset_index(drop=True)


def _cost(p, scale) -> costs.Cost:
    """Two CSVs; per layer the codes of every indexed patch on each basis (the random baseline included), the
    patches of every task cut and embedded (DreamSim: three ViT-B/16 passes each), and the grid observer's
    grids drawn three ways (a search of their targets each)."""
    from ..bases.kinds import vectors
    from ..search.index import indexed

    out = costs.Cost(disk=4096)
    for layer in p.layers:
        N, d = indexed(p, scale, layer), scale.d(layer)
        sizes = {**vectors(p, scale, layer), "random": d}
        studied = sum(min(p.n_study, k) for k in sizes.values())
        out.disk += studied * (60 * len(p.mis_bands) + 30 * len(GRID_SETTINGS))  # a CSV row each
        patches = min(N, studied * len(p.mis_bands) * p.mis_tasks * 2 * (p.mis_references + 1))
        work = {"flop64": 2 * N * d * sum(sizes.values()), "flop32": 2 * len(GRID_SETTINGS) * studied * p.n_targets * N * d,
                "images": min(scale.images["eval"], patches + len(GRID_SETTINGS) * studied * p.n_targets * p.n_neighbours)}
        if p.mis_similarity == "dreamsim":
            work["flop32"] += patches * DREAMSIM_FLOP
        elif p.mis_similarity.startswith("model:"):
            work["forwards"] = patches
        out = out + costs.Cost(host=N * d * 4 + N * studied * 8 + patches * p.thumb ** 2 * 3, device=N * d * 4,
                               work=work)
    return out


DREAMSIM_FLOP = 2 * 3 * 17.6e9
"""Floating-point operations of one DreamSim embedding (three ViT-B/16 at 224 px, 17.6 G multiply-adds each)."""


STEP = provenance.declare(
    __name__, "06_user_study", "machine", key=machine_key, reads=("model", "sample", "bases", "index"), build=make_machine,
    settings=("layers", "bases", "n_study", "n_targets", "n_neighbours", "thumb", "token_margin", "seed",
              "mis_similarity", "mis_alpha", "mis_bands", "mis_tasks", "mis_references"),
    uses=("model", "device"),
    cost=_cost, **images_only())
provenance.register_need(mis.similarity_needs, steps=("06",))
