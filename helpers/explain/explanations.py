"""Explain a model's units by compositional formulas (08): unit masks, formulas, ablation.

The units of a layer are the top ``n`` vectors of each basis the profile
fitted (setting ``bases``): principal components and ICs (each sign its own
unit: their sign is arbitrary), neurons by variance (or all neurons), NMF
components and SAE latents. A unit's map is its basis' code at every position:
the projection of the centred activations on a PC, a neuron's own channel
(centred: a constant shift changes no mask, bilinear weights sum to one), a
latent's activation. Layers without a spatial map
(fc layers, a classifier head) are skipped: every concept would cover whole
images, which is classification, not dissection.

Three steps per layer, over one row type (:class:`~helpers.explain.rows.Unit`):
the units' masks (:func:`helpers.explain.maps.unit_maps`, then
:func:`helpers.explain.maps.unit_masks`), their formulas (:func:`explain_units`)
and the accuracy with each unit alone ablated (:func:`ablate_units`).
:func:`explain` strings them together into the artifact
``data/<profile>/<model>/compositional/``: ``units.csv`` (one
:class:`~helpers.explain.rows.Unit` per unit) and ``examples_<layer>.npz`` (the
four probe images where each unit's mask is largest, with the mask, and the
unit's id: :func:`examples`). Each finished layer is saved, so an interruption
resumes at the next one.

Memory: the concept index (4 bytes per probe pixel), one batch, and one unit's
map over the probe set at a time; the maps of a layer's units go to a
temporary file in the partial artifact (``4 · units · n_probe · h · w`` bytes),
deleted when the layer is done.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..ablation.removal import Removal
from ..ablation.accuracy import accuracies
from ..bases import fit as _bases  # noqa: F401  importing it declares the bases, which explanations are made from
from ..images.common import example, images_key
from ..models.sites import sites as layer_sites
from ..models.inputs import selection
from ..models.loading import model_id
from ..models.language import images_only
from ..models.running import get_device, place
from ..pipeline import costs, distributed, provenance, store
from .beam import search
from .index import ConceptIndex
from .optimal import optimal
from .maps import encoders, unit_maps, unit_masks
from .probe import NO_CONCEPTS, broden_needs, concepts_source, formula_mask, probe
from .rows import LONGEST, Unit, read_units, units, write_units
from .rows import describe, formulas  # noqa: F401  the explorer and the site read them from here

MADE_BY = "08_compositional (python -m helpers.run --only 08)"




N_EXAMPLES = 4
"""Probe images kept per unit in ``examples_<layer>.npz``."""


def map_layers(model, layers, images, indices) -> tuple[list, list]:
    """``(with maps, skipped)``: the layers whose output is a spatial map (conv maps, ViT patch grids)."""
    param = next(model.parameters(), None)
    sites = layer_sites(model, layers, example(images, indices).to(param.device if param is not None
                                                                          else "cpu"))
    return [l for l in layers if sites[l].kind != "vector"], [l for l in layers if sites[l].kind == "vector"]


def explain_units(index, concepts, units, masks, *, beam: int = 5, max_length: int = 3,
                  candidates: str = "all", formula_search: str = "beam") -> tuple[list[Unit], dict]:
    """The formula of each unit, and the probe images where its mask is largest.

    Parameters
    ----------
    index : ConceptIndex
        The probe set's concept index, made from ``concepts``.
    concepts
        The probe images' concepts, in order (:func:`~helpers.explain.probe`).
    units : list of Unit
        The units (their ids), in the order of ``masks``.
    masks : iterable of (threshold, pixels)
        Each unit's threshold and mask (:func:`~helpers.explain.maps.unit_masks`).
    beam, max_length, candidates, formula_search
        The search (:func:`~helpers.explain.search`); ``"optimal"``: the
        certified optimum (:func:`~helpers.explain.optimal`), seeded by the beam's.

    Returns
    -------
    rows : list of Unit
        ``units`` with their explanations (``top1`` still NaN: :func:`ablate_units`).
    examples : dict
        ``image`` (K, N_EXAMPLES) probe positions; ``mask`` and ``formula_mask``
        (K, N_EXAMPLES, H, W) bool; one row per unit.

    Memory: one unit's mask at a time, the search's (a pass over the concept
    index's signatures), and the examples (``2 · K · N_EXAMPLES · H · W`` bytes).
    """
    names, rows = concepts.names, []
    examples = {"image": [], "mask": [], "formula_mask": []}
    desc = f"explain {units[0].layer}" if units else "explain"
    for u, (thr, pixels) in zip(units, tqdm(masks, total=len(units), desc=desc, leave=False)):
        e = search(index, pixels, beam=beam, max_length=max(LONGEST, max_length), candidates=candidates)
        beamed = best = e.at(max_length)
        if formula_search == "optimal":
            best = optimal(index, pixels, max_length=max_length, lower=beamed, beam=beam)
        opt = best if best is not beamed else None
        rows.append(dataclasses.replace(
            u, formula=_text(best.formula, names), length=len(best.formula) if best.formula else 0, iou=best.iou,
            primitive=_text(e.primitive, names), iou_length1=e.iou_length1,
            **{f"iou_max_length_{k + 1}": v for k, v in enumerate(e.by_length[:LONGEST])},
            formula_beam=_text(beamed.formula, names), iou_beam=beamed.iou,
            formula_optimal=_text(opt.formula, names) if opt is not None else "",
            iou_optimal=opt.iou if opt is not None else float("nan"), threshold=thr, unit_pixels=e.unit_pixels))
        image, mask = _examples(pixels, index.size, index.n_images)
        examples["image"].append(image)
        examples["mask"].append(mask)
        examples["formula_mask"].append(np.stack([formula_mask(concepts, i, best.formula) for i in image]))
    return rows, {k: np.stack(v) for k, v in examples.items()}


def ablate_units(model, images, indices, layer: str, fitted: dict, rows, *, batch_size: int = 256,
                 num_workers: int = 0, device=None) -> list[Unit]:
    """``rows`` with ``top1`` (the unit's vector alone mean-ablated at ``layer``) and ``top1_unablated``.

    ``images``, ``indices``: the eval images of the sweep; ``fitted``: the
    layer's bases (one :class:`~helpers.ablation.Removal` per vector: the two
    signs of a vector share its accuracy). Memory: the model, one batch, and the
    activations of one batch per removal (:func:`~helpers.ablation.accuracies`).
    """
    vectors, at = encoders(rows)
    caches = {basis: {} for basis in fitted}
    removals = [Removal(next(iter(fitted.values())), [])] + [Removal(fitted[basis], [c], caches[basis])
                                                             for basis, cols in vectors for c in cols]
    top1 = accuracies(model, images, layer, removals, None, indices=indices, batch_size=batch_size,
                      num_workers=num_workers, device=device, desc=f"ablate units of {layer}")
    return [dataclasses.replace(r, top1=float(top1[m + 1]), top1_unablated=float(top1[0])) for r, m in zip(rows, at)]


def explain_key(p, model=None) -> dict:
    """What profile ``p``'s explanations are made from: the settings, the layers with maps, the probe and eval
    images, the concepts, the model and the bases (their hash). The one key of 08: the driver, the ranks of
    the unit maps and provenance call it."""
    from ..models.registry import architecture

    images, indices, concepts = probe(p)
    layers, _ = map_layers(model if model is not None else architecture(p.model), p.layers, images, indices)
    params = {"layers": list(layers), "quantile": float(p.quantile), "beam": p.beam, "max_length": p.max_length,
              "candidates": p.candidates, "formula_search": p.formula_search,
              "n_explain": p.n_explain or p.n_study, "explain_all_neurons": p.explain_all_neurons}
    return provenance.key(__name__, params, {"model": model_id(p), "bases": provenance.require(p, "bases")["hash"],
                                             "images": images_key(images, indices), "concepts": concepts.identity(),
                                             "ablation_images": images_key(*selection(p, "ablation"))})


def explain(model, p, fitted: dict, folder=None, device=None) -> list[Unit]:
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
    list of Unit: the rows of ``units.csv``.

    Memory: the concept index (4 bytes per probe pixel) and the largest of one
    layer's steps (:func:`~helpers.explain.maps.unit_maps`,
    :func:`~helpers.explain.maps.unit_masks`, :func:`explain_units`,
    :func:`ablate_units`); the layer's maps wait in a scratch file on disk.
    """
    folder = Path(folder or p.artifact("compositional"))
    images, indices, concepts = probe(p)
    layers, skipped = map_layers(model, p.layers, images, indices)
    if not layers:
        raise ValueError(f"layers={list(p.layers)} have no spatial map (all are vectors): compositional "
                         "explanations need conv maps or ViT tokens; add such a layer to `layers`.")
    key = explain_key(p, model)
    with store.Build(folder, key, MADE_BY, profile=p.name) as b:
        if not b.current:
            device = get_device(device or p.device)
            model, index = place(model, device), ConceptIndex.build(concepts)
            done = list(b.progress.get("layers_done", []))
            for layer in tqdm(layers, desc="compositional explanations"):
                if layer not in done:
                    _layer(b.partial, layer, model=model, p=p, fitted=fitted[layer], probe_set=(images, indices),
                           index=index, concepts=concepts, device=device, key=key)
                    done.append(layer)
                    b.save_progress(summary=f"{len(done)} of {len(layers)} layers", layers_done=done)
            (b.partial / "maps.tmp.npy").unlink(missing_ok=True)
            write_units(b.partial / "units.csv", [r for l in layers for r in read_units(b.partial / f"{l}.csv")])
            for layer in layers:
                (b.partial / f"{layer}.csv").unlink()
            b.commit(["units.csv", *(f"examples_{layer}.npz" for layer in layers)],
                     extra={"skipped_layers": skipped, "concepts": len(concepts.names),
                            "signatures": int(len(index.count)), "probe_images": int(len(indices))})
    return read_units(folder / "units.csv")


def _layer(partial: Path, layer: str, *, model, p, fitted: dict, probe_set: tuple, index, concepts, device,
           key: dict) -> None:
    """One layer's three steps, saved in ``partial`` as ``<layer>.csv`` and ``examples_<layer>.npz``."""
    images, indices = probe_set
    mine = units(layer, fitted, p.n_explain or p.n_study, p.explain_all_neurons)
    scratch = partial / "maps.tmp.npy"
    maps = _maps(model, p, images, indices, layer, fitted, mine, scratch, device, key)
    rows, ex = explain_units(index, concepts, mine, unit_masks(maps, mine, p.quantile, index.size, device=device),
                             beam=p.beam, max_length=p.max_length, candidates=p.candidates,
                             formula_search=p.formula_search)
    del maps
    scratch.unlink()
    rows = ablate_units(model, *selection(p, "ablation"), layer, fitted, rows, batch_size=p.batch_size,
                        num_workers=p.num_workers, device=device)
    write_units(partial / f"{layer}.csv", rows)
    with store.atomic(partial / f"examples_{layer}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probe_index=np.asarray(indices)[ex["image"]], **ex,
                                basis=np.array([r.basis for r in rows]),
                                component=np.array([r.component for r in rows], np.int64),
                                sign=np.array([r.sign for r in rows]))


def _maps(model, p, images, indices, layer, fitted, mine, scratch, device, key) -> np.ndarray:
    """The maps of the units ``mine`` over the probe images (:func:`~helpers.explain.maps.unit_maps`) in the
    memory map ``scratch``, on this machine's ``torch.distributed`` ranks when ``p.nproc > 1``."""
    vectors, _ = encoders(mine)
    _, h, w = layer_sites(model, [layer], example(images, indices).to(device))[layer].shape
    maps = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32,
                                     shape=(sum(len(c) for _, c in vectors), len(indices), h, w))
    ranks = distributed.ranks(dataclasses.replace(p, nnodes=1, node_rank=0))  # this machine's processes
    if ranks.distributed:  # each rank writes its images' columns of the maps
        maps.flush()
        ranks.launch(unit_maps_rank, key=key, layer=layer, encoders=vectors, scratch=str(scratch))
    else:
        unit_maps(model, images, indices, layer, [(fitted[b], cols) for b, cols in vectors], maps,
                  batch_size=p.batch_size, num_workers=p.num_workers, device=device)
    return maps


def unit_maps_rank(p, key: dict, layer: str, encoders: list, scratch: str) -> None:
    """One rank of the distributed unit maps: its shard of the profile's probe images into ``scratch``.

    A rank whose :func:`explain_key` is not the driver's ``key`` stops with the difference.
    """
    from ..bases import layer_bases
    from ..models.loading import load_model

    net, _ = load_model(p, train=False)
    distributed.same_key(explain_key(p, net), key, "set of unit maps")
    device = distributed.device(p.device)
    probe_images, indices, _ = probe(p)
    fitted = layer_bases(p.artifact("bases"), layer, p.bases)
    out = np.load(scratch, mmap_mode="r+")
    unit_maps(net, probe_images, indices, layer, [(fitted[b], cols) for b, cols in encoders], out,
              batch_size=p.batch_size, num_workers=p.num_workers, device=device,
              span=distributed.shard(len(indices), p.batch_size))
    out.flush()


def examples(folder, unit) -> dict:
    """The saved examples of one unit: ``image`` (N_EXAMPLES,) probe positions, ``probe_index``
    (N_EXAMPLES,) dataset indices, ``mask`` and ``formula_mask`` (N_EXAMPLES, H, W) bool.

    ``unit``: a :class:`~helpers.explain.rows.Unit`, or a row of a table of them
    (its ``layer, basis, component, sign`` pick the examples). Memory: the
    layer's examples (``2 · K · N_EXAMPLES · H · W`` bytes for K units).
    """
    path = Path(folder) / f"examples_{unit.layer}.npz"
    with np.load(path) as f:
        if "basis" not in f.files:
            raise ValueError(f"{path} has no unit ids (basis, component, sign): an older 08 made it; delete "
                             "the compositional artifact and rerun 08 (python -m helpers.run --only 08).")
        hit = np.flatnonzero((f["basis"] == unit.basis) & (f["component"] == unit.component)
                             & (f["sign"] == unit.sign))
        if len(hit) != 1:
            raise KeyError(f"{path}: {len(hit)} rows for the {unit.basis} unit {unit.component}{unit.sign}, "
                           "not one: pass a row of this artifact's units.csv (explain.explain, read_units).")
        return {k: f[k][hit[0]] for k in ("image", "probe_index", "mask", "formula_mask")}


def _text(formula, names) -> str:
    return formula.text(names) if formula else ""


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
    from ..bases.kinds import vectors
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


def make_explanations(p) -> list[Unit]:
    """Step 08 for profile ``p``: the explanations of its model and bases (reused when current); their rows."""
    from ..bases.fit import layer_bases
    from ..models.loading import load_model

    net, _ = load_model(p, train=False)
    return explain(net, p, {layer: layer_bases(p.artifact("bases"), layer, p.bases) for layer in p.layers})


STEP = provenance.declare(
    __name__, "08_compositional", "compositional", key=explain_key, reads=("model", "bases"), cost=_cost,
    build=make_explanations, rank=unit_maps_rank,
    settings=("model", "layers", "eval_split", "n_eval", "concepts", "broden_root", "broden_subset", "broden_categories",
              "mask_size", "n_probe", "quantile", "beam", "max_length", "candidates", "formula_search", "n_explain",
              "n_study", "explain_all_neurons", "ablation_eval", "seed"),
    uses=("bases", "batch_size", "num_workers", "device", "nproc", "nnodes", "node_rank", "rdzv_endpoint"),
    outputs=(provenance.Output("compositional_explanations.csv", gather="compositional"),
             provenance.Output("compositional_vs_ablation.csv"),
             provenance.Output("compositional_optimality.csv", when=lambda p: p.formula_search == "optimal"),
             provenance.Output("fig_compositional_iou", caption="Compositional explanations · IoU per layer"),
             provenance.Output("fig_compositional_iou_by_length",
                               caption="Compositional explanations · IoU by formula length"),
             provenance.Output("fig_compositional_examples")),
    applies=lambda p: images_only()["applies"](p) and concepts_source(p) is not None,
    why_not=lambda p: images_only()["why_not"](p) if not images_only()["applies"](p) else NO_CONCEPTS.format(
        dataset=p.dataset))
provenance.register_need(broden_needs, steps=("08",))
