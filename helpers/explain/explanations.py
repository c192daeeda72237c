"""Explain a model's units by compositional formulas (08): probe set, unit maps, search, importance.

The units of a layer are the top ``n`` vectors of each basis the profile
fitted (setting ``bases``): principal components and ICs (each sign its own
unit: their sign is arbitrary), neurons by variance (or all neurons), NMF
components and SAE latents. A unit's map is its basis' code at every position:
the projection of the centred activations on a PC, a neuron's own channel
(centred: a constant shift changes no mask, bilinear weights sum to one), a
latent's activation. Layers without a spatial map
(fc layers, a classifier head) are skipped: every concept would cover whole
images, which is classification, not dissection.

:func:`explain` makes the artifact ``data/<profile>/<model>/compositional/``:
``units.csv`` (one row per unit: formula, IoU, the best primitive, the best IoU
at each length 1 … 5, threshold, mask size, and the accuracy when the unit alone
is mean-ablated) and ``examples_<layer>.npz`` (the four probe images where each
unit's mask is largest, with the mask). Each finished layer is saved, so an
interruption resumes at the next one.

Memory: the concept index (4 bytes per probe pixel), one batch, and one unit's
map over the probe set at a time; the maps of a layer's units go to a
temporary file in the partial artifact (``4 · units · n_probe · h · w`` bytes),
deleted when the layer is done.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..ablation.removal import Removal
from ..ablation.accuracy import accuracies
from ..bases import fit as _bases  # noqa: F401  registers the bases, which explanations are made from
from ..images.common import example, images_key
from ..models.sites import sites as layer_sites
from ..models.inputs import selection
from ..models.loading import model_id
from ..models.running import get_device, place
from ..pipeline import costs, distributed, keys, provenance, store
from .beam import search
from .formula import threshold, unit_pixels
from .index import ConceptIndex
from .optimal import optimal
from .maps import unit_maps
from .probe import NO_CONCEPTS, broden_needs, concepts_source, formula_mask, probe

MADE_BY = "08_compositional (python -m helpers.run --only 08)"


SOURCES = ("explain/explanations", "explain/maps", "explain/probe", "explain/formula", "explain/index",
           "explain/beam", "explain/optimal", "images/concepts", "models/families", "models/sites", "ablation/removal",
           "ablation/accuracy", "images/common", "images/fashion", "images/folders", "images/batches", "models/inputs")


LONGEST = 5
"""The by-length curve runs to formulas of this many concepts (or ``max_length`` if longer)."""


N_EXAMPLES = 4


FIELDS = ("layer", "basis", "component", "sign", "neuron", "formula", "length", "iou", "primitive",
          "iou_length1", *(f"iou_max_length_{k}" for k in range(1, LONGEST + 1)), "formula_beam", "iou_beam",
          "formula_optimal", "iou_optimal", "threshold", "unit_pixels", "top1", "top1_unablated")


TABLE = ("layer", "basis", "component", "sign", "formula", "length", "iou", "iou_length1")
"""The columns of ``compositional_explanations.csv``."""



def units(fitted: dict, n: int, all_neurons: bool = False) -> list[dict]:
    """The units of one layer: ``{"basis", "component" (1-based rank), "sign", "neuron", "map"}``.

    ``fitted``: ``{basis: fitted basis}`` of the layer (:func:`helpers.bases.layer_bases`);
    the top ``n`` vectors of each (every neuron with ``all_neurons``). A basis
    whose codes take both signs (PCA, ICA: :data:`helpers.bases.KINDS`) gives two
    units per vector, which share one ``map`` (the maps are numbered in order).
    """
    from ..bases.kinds import KINDS

    out, at = [], 0
    for basis, b in fitted.items():
        K = len(b.components_)
        for j in range(K if basis == "neuron" and all_neurons else min(n, K)):
            for sign in (1, -1) if KINDS[basis].signed else (1,):
                out.append({"basis": basis, "component": j + 1, "sign": sign, "map": at,
                            "neuron": int(b.order_[j]) if basis == "neuron" else -1})
            at += 1
    return out


def explanations_key(p, layers, images: dict, concepts: dict, ablation_images: dict, model_id: str,
                     bases_hash: str) -> dict:
    """What the explanations are made from: the settings, probe and eval images, concepts, model, bases."""
    params = {"layers": list(layers), "quantile": float(p.quantile), "beam": p.beam, "max_length": p.max_length,
              "candidates": p.candidates, "formula_search": p.formula_search,
              "n_explain": p.n_explain or p.n_study, "explain_all_neurons": p.explain_all_neurons}
    return keys.key(params, {"model": model_id, "bases": bases_hash, "images": images, "concepts": concepts,
                             "ablation_images": ablation_images}, SOURCES)


def map_layers(model, layers, images, indices) -> tuple[list, list]:
    """``(with maps, skipped)``: the layers whose output is a spatial map (conv maps, ViT patch grids)."""
    param = next(model.parameters(), None)
    sites = layer_sites(model, layers, example(images, indices).to(param.device if param is not None
                                                                          else "cpu"))
    return [l for l in layers if sites[l].kind != "vector"], [l for l in layers if sites[l].kind == "vector"]


def explain_layer(model, images, indices, index, concepts, layer, unit_list, fitted, scratch, *, p,
                  ablation_images, ablation_indices, device=None) -> tuple[list, dict]:
    """Rows of ``units.csv`` and the examples of one layer (see the module docstring).

    ``index``: the probe set's :class:`~helpers.explain.ConceptIndex`, made
    from ``concepts`` (the probe images' concepts, in order); ``fitted``: the
    layer's bases (their codes are the maps; the ablation removes one vector,
    :class:`~helpers.ablation.Removal`); ``scratch``: the temporary maps file.
    """
    device = get_device(device)
    model = place(model, device)
    plus = [u for u in unit_list if u["sign"] == 1]  # one per map, in map order
    encoders = {}
    for u in plus:
        encoders.setdefault(u["basis"], []).append(u["component"] - 1)
    _, h, w = layer_sites(model, [layer], example(images, indices).to(device))[layer].shape
    maps = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(len(plus), len(indices), h, w))
    ranks = distributed.ranks(dataclasses.replace(p, nnodes=1, node_rank=0))  # this machine's processes
    if ranks.distributed:  # each rank writes its images' columns of the maps
        maps.flush()
        ranks.launch("helpers.explain.maps:unit_maps_rank", layer=layer, encoders=list(encoders.items()),
                     scratch=str(scratch), images=images_key(images, indices), model=model_id(p))
    else:
        unit_maps(model, images, indices, layer, [(fitted[b], cols) for b, cols in encoders.items()], maps,
                  batch_size=p.batch_size, num_workers=p.num_workers, device=device)
    rows, examples, names = [], {"image": [], "mask": [], "formula_mask": []}, concepts.names
    for u in tqdm(unit_list, desc=f"explain {layer}", leave=False):
        values = maps[u["map"]] * u["sign"]
        thr = threshold(values, p.quantile)
        pixels = unit_pixels(values, thr, index.size, device=device)
        e = search(index, pixels, beam=p.beam, max_length=max(LONGEST, p.max_length), candidates=p.candidates)
        beam = best = e.at(p.max_length)
        if p.formula_search == "optimal":
            best = optimal(index, pixels, max_length=p.max_length, lower=beam, beam=p.beam)
        rows.append({"layer": layer, "basis": u["basis"], "component": u["component"],
                     "sign": "+" if u["sign"] > 0 else "-", "neuron": u["neuron"],
                     "formula": best.formula.text(names) if best.formula else "",
                     "length": len(best.formula) if best.formula else 0, "iou": best.iou,
                     "primitive": e.primitive.text(names) if e.primitive else "", "iou_length1": e.iou_length1,
                     **{f"iou_max_length_{k + 1}": v for k, v in enumerate(e.by_length[:LONGEST])},
                     "formula_beam": beam.formula.text(names) if beam.formula else "", "iou_beam": beam.iou,
                     **_optimal_fields(best if best is not beam else None, names),
                     "threshold": thr, "unit_pixels": e.unit_pixels, "map": u["map"]})
        image, mask = _examples(pixels, index.size, len(indices))
        examples["image"].append(image)
        examples["mask"].append(mask)
        examples["formula_mask"].append(np.stack([formula_mask(concepts, i, best.formula) for i in image]))
    del maps
    Path(scratch).unlink()
    first = next(iter(fitted.values()))
    caches = {basis: {} for basis in fitted}
    removals = [Removal(first, [])] + [Removal(fitted[u["basis"]], [u["component"] - 1], caches[u["basis"]])
                                       for u in plus]
    top1 = accuracies(model, ablation_images, layer, removals, None, indices=ablation_indices,
                      batch_size=p.batch_size, num_workers=p.num_workers, device=device,
                      desc=f"ablate units of {layer}")
    for r in rows:
        r["top1"], r["top1_unablated"] = float(top1[r.pop("map") + 1]), float(top1[0])
    return rows, {k: np.stack(v) for k, v in examples.items()}


def _optimal_fields(opt, names) -> dict:
    """``formula_optimal`` and ``iou_optimal`` of a row: the certified optimum, or empty (beam search only)."""
    if opt is None:
        return {"formula_optimal": "", "iou_optimal": float("nan")}
    return {"formula_optimal": opt.formula.text(names) if opt.formula else "", "iou_optimal": opt.iou}


def optimality(table):
    """Per layer and basis: how far the beam's formulas are from the certified optimum.

    ``table``: rows of ``units.csv`` made with ``formula_search="optimal"``.
    Columns ``layer, basis, n_units, suboptimal, suboptimal_share, mean_iou_left, max_iou_left``: a
    beam formula is suboptimal when its IoU is below the optimum's (by more than 1e-12).
    """

    t = table.assign(left=table.iou_optimal - table.iou_beam)
    t = t.assign(suboptimal=t.left > 1e-12)
    out = t.groupby(["layer", "basis"], sort=False).agg(
        n_units=("left", "size"), suboptimal=("suboptimal", "sum"), mean_iou_left=("left", "mean"),
        max_iou_left=("left", "max")).reset_index()
    out.insert(4, "suboptimal_share", out.suboptimal / out.n_units)
    return out


def explain_key(p, model=None) -> dict:
    """The key the explanations must have for profile ``p`` (given the current model and bases artifacts)."""
    from ..models.registry import architecture
    images, indices, concepts = probe(p)
    layers, _ = map_layers(model if model is not None else architecture(p.model), p.layers, images, indices)
    return explanations_key(p, layers, images_key(images, indices), concepts.identity(),
                            images_key(*selection(p, "ablation")), model_id(p),
                            provenance.require(p, "bases")["hash"])


def explain(model, p, fitted: dict, folder=None, device=None) -> list[dict]:
    """Explain the units of every map layer of ``p.layers`` (reused while current).

    Parameters
    ----------
    model : torch.nn.Module
    p : Profile
    fitted : dict
        ``{layer: {basis: fitted basis}}`` (:func:`helpers.bases.layer_bases`).
    folder : path, optional
        The artifact (default ``p.artifact("compositional")``).

    Returns
    -------
    list of dict: the rows of ``units.csv`` (``FIELDS``).
    """
    folder = Path(folder or p.artifact("compositional"))
    images, indices, concepts = probe(p)
    layers, skipped = map_layers(model, p.layers, images, indices)
    if not layers:
        raise ValueError(f"layers={list(p.layers)} have no spatial map (all are vectors): compositional "
                         "explanations need conv maps or ViT tokens; add such a layer to `layers`.")
    ablation_images, ablation_indices = selection(p, "ablation")
    key = explain_key(p, model)
    with store.Build(folder, key, MADE_BY, profile=p.name) as b:
        if not b.current:
            _explain(b, model, p, fitted, layers, skipped, images, indices, concepts, ablation_images,
                     ablation_indices, device or p.device)
    return read_units(folder / "units.csv")


def _explain(b, model, p, fitted, layers, skipped, images, indices, concepts, ablation_images, ablation_indices,
             device):
    index = ConceptIndex.build(concepts)
    done = list(b.progress.get("layers_done", []))
    for layer in tqdm(layers, desc="compositional explanations"):
        if layer in done:
            continue
        unit_list = units(fitted[layer], p.n_explain or p.n_study, p.explain_all_neurons)
        rows, examples = explain_layer(model, images, indices, index, concepts, layer, unit_list,
                                       fitted[layer], b.partial / "maps.tmp.npy", p=p,
                                       ablation_images=ablation_images, ablation_indices=ablation_indices,
                                       device=device)
        _write(b.partial / f"{layer}.csv", rows)
        with store.atomic(b.partial / f"examples_{layer}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, probe_index=np.asarray(indices)[examples["image"]], **examples)
        done.append(layer)
        b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done)
    (b.partial / "maps.tmp.npy").unlink(missing_ok=True)
    rows = [r for layer in layers for r in read_units(b.partial / f"{layer}.csv")]
    _write(b.partial / "units.csv", rows)
    for layer in layers:
        (b.partial / f"{layer}.csv").unlink()
    return b.commit(["units.csv", *(f"examples_{layer}.npz" for layer in layers)],
                    extra={"skipped_layers": skipped, "concepts": len(concepts.names),
                           "signatures": int(len(index.count)), "probe_images": int(len(indices))})


def _write(path, rows) -> None:
    store.write_csv(path, FIELDS, rows)


def read_units(path) -> list[dict]:
    """The rows of a ``units.csv``, numbers parsed."""
    ints = {"component", "neuron", "length", "unit_pixels"}
    with open(path) as f:
        return [{k: (int(v) if k in ints else v if k in ("layer", "basis", "sign", "formula", "primitive",
                                                          "formula_beam", "formula_optimal")
                     else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def examples(folder, layer: str) -> dict:
    """The saved examples of a layer: ``image`` (K, 4) probe positions, ``probe_index`` (K, 4) dataset
    indices, ``mask`` and ``formula_mask`` (K, 4, H, W), one row per row of ``units.csv`` of the layer."""
    with np.load(Path(folder) / f"examples_{layer}.npz") as f:
        return {k: f[k] for k in f.files}


def formulas(p) -> dict:
    """``{(layer, basis, component): [(sign, formula, iou), ...]}`` from 08's artifact; ``{}`` unless current.

    For the explorer and the demo site: the formula beside a unit's grid.
    """
    try:
        state, _ = provenance.status(p, "compositional")
    except (OSError, ValueError):  # no concepts for this profile, or an upstream artifact missing
        return {}
    if state != "current":
        return {}
    out: dict = {}
    for r in read_units(p.artifact("compositional") / "units.csv"):
        out.setdefault((r["layer"], r["basis"], r["component"]), []).append((r["sign"], r["formula"], r["iou"]))
    return out


def describe(entries) -> str:
    """``"+ (garment AND top) AND NOT bright (IoU 0.21); − …"`` for one unit's entries of :func:`formulas`."""
    return "; ".join(f"{'' if len(entries) == 1 else sign + ' '}{formula or '(none)'} (IoU {iou:.2f})"
                     for sign, formula, iou in entries)


def importance(table):
    """Does interpretability track importance? Spearman ρ of IoU against the accuracy drop, per layer and basis.

    A unit's drop is ``top1_unablated − top1`` when it alone is mean-ablated; a
    PC counts once, with the IoU of its better-explained sign.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    t = table.assign(top1_drop=table.top1_unablated - table.top1)
    per_unit = t.groupby(["layer", "basis", "component"], sort=False).agg(
        iou=("iou", "max"), top1_drop=("top1_drop", "first"))
    out = []
    for (layer, basis), g in per_unit.groupby(level=[0, 1], sort=False):
        x, y = g["iou"], g["top1_drop"]
        rho, pval = spearmanr(x, y) if len(g) > 2 and x.nunique() > 1 and y.nunique() > 1 \
            else (float("nan"), float("nan"))
        out.append({"layer": layer, "basis": basis, "n_units": len(g), "spearman_rho": float(rho),
                    "p_value": float(pval), "mean_iou": float(x.mean()), "mean_top1_drop": float(y.mean())})
    return pd.DataFrame(out)


def _examples(pixels, size, n_images) -> tuple[np.ndarray, np.ndarray]:
    """The ``N_EXAMPLES`` probe images where the mask is largest (ties: first) and its mask in each."""
    H, W = size
    per = np.bincount(pixels // (H * W), minlength=n_images)
    top = np.argsort(-per, kind="stable")[:N_EXAMPLES]
    mask = np.zeros((len(top), H * W), bool)
    for j, i in enumerate(top):
        mine = pixels[pixels // (H * W) == i] - i * H * W
        mask[j, mine] = True
    return top.astype(np.int64), mask.reshape(len(top), H, W)


def _cost(p, scale) -> costs.Cost:
    """``units.csv`` and per map layer the examples' masks (compressed); while a layer runs, the maps of its
    units over the probe images in a float32 scratch file. Work: the probe images forwarded once per layer,
    every unit's vector mean-ablated over the sweep images, and per unit at most a pass over the concept
    index (a signature id per probe pixel: the search's sparse products are over signatures, not pixels)."""
    from ..bases.fit import vectors
    from ..bases.kinds import KINDS

    n, pixels = scale.images["probe"], scale.mask_side ** 2
    out = costs.Cost(disk=4096)
    for layer in scale.map_layers:
        sizes = vectors(p, scale, layer)
        maps = sum(k if b == "neuron" and p.explain_all_neurons else min(p.n_explain or p.n_study, k)
                   for b, k in sizes.items())
        signed = sum(min(p.n_explain or p.n_study, k) for b, k in sizes.items() if KINDS[b].signed) + maps
        scratch = costs.npy_bytes(maps, n, scale.positions(layer))
        out = out + costs.Cost(disk=signed * (N_EXAMPLES * pixels // 4 + 400), scratch=scratch, host=n * pixels // 8,
                               device=scale.param_bytes + min(p.batch_size, n) * scale.forward_bytes,
                               work={"images": n, "forwards": maps * scale.images["ablation"],
                                     "bits": (signed + 1) * n * pixels * 4})
    return out


provenance.register("compositional", explain_key, upstream=("model", "bases"), cost=_cost,
                    applies=lambda p: concepts_source(p) is not None,
                    why_not=lambda p: NO_CONCEPTS.format(dataset=p.dataset))
provenance.register_need(broden_needs, steps=("08",))
