"""The static demo site: every model's grids as on the authors' page, and more.

``python -m helpers.site --profile quick`` (``make site``) writes ``site/<profile>/``:
``index.html``, ``site.js``, ``site.css`` (plain, written here: no CDN, no network
request), ``manifest.json`` — models, layers, bases, components and files, from
which the page builds its menus — the same as ``manifest.js`` (a script, because a
page opened from ``file://`` may not fetch files), the grids and the per-model
figures as compressed PNGs. The folder works from ``file://`` and from any static
host.

A model is exported when its grids (04) are current for the profile; a model
whose grids are missing or stale is left out, with the reason printed. Its
compositional explanations (08) appear beside the grids when they are current.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from ..pipeline.settings import ROOT, load_profile, slug

ASSETS = Path(__file__).with_name("assets")


def captions() -> dict:
    """``{figure: caption}``: the per-model figures on the second view, in the order of the notebooks, as the
    steps declare them (:class:`helpers.pipeline.provenance.Output` with a caption)."""
    from .. import steps  # noqa: F401  importing the catalogue declares every step
    from ..pipeline import provenance

    return {o.name: o.caption for nb in provenance.notebooks().values() for o in nb.outputs if o.caption}


def models_found(profile: str, figures_dir=None) -> list[str]:
    """The models with outputs for a profile: their names, from each figures folder's ``provenance.json``."""
    base = Path(figures_dir) if figures_dir else ROOT / "figures" / profile
    names = []
    for record in sorted(base.glob("*/provenance.json")):
        entries = json.loads(record.read_text())
        names.extend(e["settings"]["model"] for e in entries.values() if "settings" in e)
    return list(dict.fromkeys(names))


def recorded_settings(profile: str, model: str, figures_dir=None) -> dict:
    """The settings a model's grid figures (04) were made with, from its ``provenance.json``; ``{}`` if none.

    So a site shows a model as it was run (e.g. with ``-p bases=pca,neuron,sae``) without repeating
    its settings.
    """
    base = Path(figures_dir) if figures_dir else ROOT / "figures" / profile
    record = base / slug(model) / "provenance.json"
    if not record.exists():
        return {}
    made = [e["settings"] for e in json.loads(record.read_text()).values()
            if e.get("made_by") == "04_visualize" and "settings" in e]
    return {k: v for k, v in made[-1].items() if k != "name"} if made else {}


def _png(src: Path, dst: Path, colours: int | None = None) -> None:
    """Re-encode a PNG compressed (optionally quantised to ``colours`` colours)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(src)
    if colours and image.mode in ("RGB", "RGBA"):
        image = image.convert("RGB").quantize(colours, dither=Image.Dither.NONE)
    image.save(dst, format="PNG", optimize=True)


def model_entry(p, out: Path, say=print) -> dict | None:
    """Export one model's grids and figures into ``out``; its manifest entry (``None`` when not current)."""
    from ..bases.fit import layer_bases
    from ..bases.kinds import KINDS
    from ..explain.explanations import describe, formulas
    from ..grids.visualize import grid_path, label
    from ..pipeline import provenance

    state, why = provenance.status(p, "grids")
    if state != "current":
        say(f"{p.model}: left out, its grids are {state} ({why})")
        return None
    explained = formulas(p)
    folder, here = p.artifact("grids"), slug(p.model)
    layers = []
    for layer in p.layers:
        bases = {}
        for basis, b in layer_bases(p.artifact("bases"), layer, p.bases).items():
            items, j = [], 0
            while grid_path(folder, layer, basis, j).exists():
                rel = f"images/{here}/{slug(layer)}/{basis}_{j + 1:04d}.png"
                _png(grid_path(folder, layer, basis, j), out / rel)
                found = explained.get((layer, basis, j + 1))
                items.append({"k": j + 1, "file": rel, "label": label(b, layer, basis, j),
                              "variance": round(float(b.explained_variance_ratio_[j]), 6),
                              **({"formula": describe(found)} if found else {})})
                j += 1
            bases[basis] = {"name": "neuron" if basis == "neuron" else KINDS[basis].label, "d": len(b.mean_),
                            "vectors": int(len(b.components_)), "components": items}
        layers.append({"name": layer, "bases": bases})
    figures = []
    for name, caption in captions().items():
        src = p.figure(name).with_name(f"{name}.png")
        if src.exists():
            rel = f"images/{here}/{name}.png"
            _png(src, out / rel, colours=256)
            figures.append({"name": name, "caption": caption, "file": rel})
    return {"name": p.model, "layers": layers, "figures": figures, "compositional": bool(explained)}


def export(profile: str = "quick", out=None, models=None, say=print, **overrides) -> Path:
    """Write the site of a profile's models into ``out`` (default ``site/<profile>/``); returns it.

    ``models``: names (default: every model with outputs, :func:`models_found`); each model's
    settings are those its grids were made with (:func:`recorded_settings`), then ``overrides``
    (e.g. ``data_dir``, ``figures_dir``).
    """
    out = Path(out) if out else ROOT / "site" / profile
    names = models or models_found(profile, overrides.get("figures_dir"))
    if not names:
        raise FileNotFoundError(f"no model of profile {profile!r} has outputs to publish; run its notebooks "
                                f"first (make figures PROFILE={profile}).")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries = []
    for name in names:
        settings = {**recorded_settings(profile, name, overrides.get("figures_dir")), **overrides, "model": name}
        entry = model_entry(load_profile(profile, **settings), staging, say)
        if entry:
            entries.append(entry)
    if not entries:
        shutil.rmtree(staging)
        raise FileNotFoundError(f"no model of profile {profile!r} has current grids; run 01-04 (make figures).")
    manifest = {"profile": profile, "models": entries}
    text = json.dumps(manifest, indent=1)
    (staging / "manifest.json").write_text(text)
    (staging / "manifest.js").write_text(f"window.MANIFEST = {text};\n")
    for asset in ("index.html", "site.js", "site.css", "favicon.png"):
        shutil.copy(ASSETS / asset, staging / asset)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    say(f"site of {len(entries)} model(s) in {out} ({size / 1e6:.1f} MB): open {out / 'index.html'}")
    return out


def main(argv=None) -> int:
    from ..pipeline.kernels import parse_parameters

    parser = argparse.ArgumentParser(prog="python -m helpers.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", default=None, help="folder (default: site/<profile>/)")
    parser.add_argument("--model", action="append", default=None, help="a model to publish (repeatable)")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[])
    args = parser.parse_args(argv)
    try:
        export(args.profile, args.out, args.model, **parse_parameters(args.parameter))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
