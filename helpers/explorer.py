"""An ipywidgets panel to browse any basis vector's grid, like the authors' web demo.

Pick profile, layer, basis (those the profile fitted) and component (1 … d, by importance); the grid
and its explained-variance ratio appear, computed live from the profile's
artifacts (01–03), with the unit's compositional explanation when 08 ran. It
opens on the first layer's top PC; a profile without artifacts says so before
any model is loaded.
"""
from __future__ import annotations

import html

from .explain.explanations import describe, formulas
from .grids.visualize import grid_png, visualizer_for
from .pipeline.settings import load_profile


def missing_artifacts(p) -> str | None:
    """Why a profile's grids cannot be shown yet (no sample, bases or index for its settings), else ``None``.

    Checked before any model is loaded: on a profile never run, nothing is downloaded.
    """
    from .pipeline.provenance import made_by, status

    for artifact in ("sample", "bases", "index"):
        try:
            state = status(p, artifact)[0]
        except (ValueError, FileNotFoundError):  # e.g. ImageNet's folder not given: nothing made either
            state = "missing"
        if state == "missing":
            return (f"profile {p.name} has no {artifact} for {p.model} and these settings yet: run "
                    f"{made_by(p, artifact)} (or make figures PROFILE={p.name}) first.")
    return None


def explorer(profiles=("quick", "smoke", "paper"), profile=None, **overrides):
    """The panel (an ``ipywidgets.VBox``), opened on the first layer's top PC.

    ``profile`` preselects one; overrides apply to all. A failed update says why
    and clears the grid, so no stale grid stays under a new choice.
    """
    import ipywidgets as w

    first = profile.name if hasattr(profile, "name") else (profile or profiles[0])
    names = list(dict.fromkeys([first, *profiles]))
    cache = {}
    pick_profile = w.Dropdown(options=names, value=first, description="profile")
    pick_layer = w.Dropdown(description="layer")
    pick_basis = w.ToggleButtons(options=["pca"], description="basis")
    pick_comp = w.BoundedIntText(value=1, min=1, max=1, description="component")
    label, picture = w.HTML(), w.Image(format="png", layout=w.Layout(display="none"))

    def settings():
        name = pick_profile.value
        return profile if hasattr(profile, "name") and profile.name == name else load_profile(name, **overrides)

    def current():
        name = pick_profile.value
        if name not in cache:
            p = settings()
            why = missing_artifacts(p)
            if why:
                raise FileNotFoundError(why)
            cache[name] = visualizer_for(p)
            cache[name, "formulas"] = formulas(p)
        return cache[name]

    def fail(e):
        label.value = f"<b>{html.escape(str(e))}</b>"
        picture.layout.display = "none"
        picture.value = b""

    def on_profile(_=None):
        try:
            p = settings()
        except (ValueError, FileNotFoundError) as e:
            fail(e)
            return
        for widget in (pick_layer, pick_basis):
            widget.unobserve(on_show, names="value")
        pick_layer.options, pick_basis.options = list(p.layers), list(p.bases)
        pick_layer.value, pick_basis.value = p.layers[0], p.bases[0]
        for widget in (pick_layer, pick_basis):
            widget.observe(on_show, names="value")
        on_show()

    def on_show(_=None):
        try:
            vis = current()
            fitted = vis.layer(pick_layer.value)["bases"]
            if pick_basis.value not in fitted:
                raise ValueError(f"{pick_layer.value} has no {pick_basis.value} basis (NMF needs a ReLU after "
                                 f"the layer); it has {', '.join(fitted)}.")
            d = len(fitted[pick_basis.value].components_)
            pick_comp.max = d
            g = vis.grid(pick_layer.value, pick_basis.value, min(pick_comp.value, d) - 1)
        except (FileNotFoundError, ValueError) as e:
            fail(e)
            return
        label.value = f"<b>{g['label']}</b> — columns: targets from the lowest to the highest projection"
        found = cache[pick_profile.value, "formulas"].get((pick_layer.value, pick_basis.value, pick_comp.value))
        if found:
            label.value += f"<br>compositional explanation (08): {html.escape(describe(found))}"
        picture.value = grid_png(g["image"], scale=2)
        picture.layout.display = None

    for widget in (pick_layer, pick_basis, pick_comp):
        widget.observe(on_show, names="value")
    pick_profile.observe(on_profile, names="value")
    on_profile()  # the first layer, its top PC
    return w.VBox([w.HBox([pick_profile, pick_layer]), w.HBox([pick_basis, pick_comp]), label, picture])
