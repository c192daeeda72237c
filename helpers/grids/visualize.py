"""Step 4 of the method: points along a basis vector, their nearest patches, the grid.

For a basis vector ``v`` of a layer, ``m`` targets ``mean + t * v`` are placed
with ``t`` evenly spaced from the smallest to the largest projection of the
sample on ``v``; for each target the ``k`` nearest indexed patches (L2) are
found, and shown as a grid: columns = targets left to right, rows = neighbours.
Any basis the same way: ``v`` its unit direction (an SAE's decoder row), ``t``
over the range of its code less the code's mean, from the layer's pre-ReLU mean
(NMF's directions, fitted after the ReLU, too). With the setting
``adjacent_repeats`` = ``"patch"`` (``"image"``) no patch (image) is shown in two
adjacent columns: each column, left to right, takes its ``k`` nearest patches
absent from the column before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..bases.fit import layer_bases
from ..bases.kinds import KINDS
from ..images.common import example
from ..models.inputs import load_dataset
from ..models.loading import load_model
from ..models.receptive import crop, receptive_fields
from ..pipeline import costs, provenance, store
from ..sampling import open_sample
from .text import text_grid, write_html
from ..search import load_index, search

GRIDS_MADE_BY = "04_visualize (python -m helpers.run --only 04)"


def projection_range(X, basis, chunk_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest centred code of the sample on every basis vector.

    The code of a vector is ``basis.transform(x)`` less its mean over the sample
    (``code_mean_``): the projection on a PC, a neuron's centred activation, a
    latent's activation less its mean. ``X`` (n, d) is streamed in chunks;
    memory ``chunk_size * (d + n_components)`` float64 plus the basis.
    Returns two float64 arrays of shape (n_components,).
    """
    zbar = np.asarray(basis.code_mean_, np.float64)
    lo, hi = np.full(len(zbar), np.inf), np.full(len(zbar), -np.inf)
    for start in range(0, len(X), chunk_size):
        t = basis.transform(np.asarray(X[start:start + chunk_size])) - zbar
        lo, hi = np.minimum(lo, t.min(0)), np.maximum(hi, t.max(0))
    return lo, hi


def targets(lo: float, hi: float, m: int) -> np.ndarray:
    """``m`` coefficients evenly spaced from ``lo`` to ``hi``."""
    return np.linspace(lo, hi, m)


def patch_grid(images, locs, field, thumb: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Grid of patches: ``locs`` of shape (m, k, 3) -> image with k rows and m columns.

    ``images`` has ``display(i)``; ``field`` is the layer's receptive field (None: whole image).
    Returns ndarray of shape (k * (thumb + gap) - gap, m * (thumb + gap) - gap, C), uint8.
    """
    m, k, _ = locs.shape
    first = images.display(int(locs[0, 0, 0]))
    c = first.shape[2]
    out = np.full((k * (thumb + gap) - gap, m * (thumb + gap) - gap, c), background, np.uint8)
    for col in range(m):
        for row in range(k):
            image, y, x = (int(v) for v in locs[col, row])
            box = None if field is None else field.box(y, x)
            patch = crop(images.display(image), box, thumb)
            top, left = row * (thumb + gap), col * (thumb + gap)
            out[top:top + thumb, left:left + thumb] = patch
    return out


class Visualizer:
    """Grids for any layer, basis and component of a profile's artifacts (01–03).

    Parameters
    ----------
    profile : Profile
    images : Dataset with ``display(i)``
        The eval split (the indexed images).
    fields : dict
        ``{layer: Field or None}`` from ``receptive.receptive_fields``.
    keys : dict, optional
        ``{"sample": key, "bases": key, "index": key}``: the keys the artifacts
        must have (``provenance.keys``); stale ones are refused. None: unchecked.

    Per layer it loads the index, the bases and the projection ranges once
    (a pass over the sample: ``O(n d**2)`` for PCA) and keeps them.
    """

    def __init__(self, profile, images, fields, device=None, keys: dict | None = None):
        self.p, self.images, self.fields, self.device = profile, images, fields, device
        self.keys, self._layers = keys or {}, {}
        self.text = getattr(images, "kind", "images") == "text"  # a language model's: token contexts

    def bases(self, layer: str) -> dict:
        """``{basis: fitted basis}`` of a layer, for each of the profile's ``bases`` it has."""
        return layer_bases(self.p.artifact("bases"), layer, self.p.bases, self.keys.get("bases"))

    def layer(self, layer: str) -> dict:
        if layer not in self._layers:
            p = self.p
            index, loc = load_index(p.artifact("index"), layer, p.nprobe, self.device, self.keys.get("index"))
            X, _ = open_sample(p.artifact("sample"), layer, self.keys.get("sample"))
            bases = self.bases(layer)
            ranges = {b: projection_range(X, basis) for b, basis in bases.items()}
            self._layers[layer] = {"index": index, "loc": np.asarray(loc), "bases": bases, "ranges": ranges}
        return self._layers[layer]

    def plan(self, layer: str, basis: str, components) -> list[dict]:
        """The targets and nearest patches of several basis vectors of one basis, found in one search.

        Returns one dict per component: ``t`` (m,), ``locs`` (m, k, 3), ``ratio``, ``label`` (no image yet).
        """
        info = self.layer(layer)
        if basis not in info["bases"]:
            raise ValueError(f"basis={basis!r} is not fitted for {layer}; it has {list(info['bases'])} "
                             "(the setting bases chooses them; NMF needs a ReLU after the layer).")
        b, components = info["bases"][basis], [int(c) for c in components]
        for component in components:
            if not 0 <= component < len(b.components_):
                raise ValueError(f"component={component} is out of range for {layer} "
                                 f"(1 to {len(b.components_)} in descending variance).")
        m = self.p.n_targets
        ts = [targets(info["ranges"][basis][0][c], info["ranges"][basis][1][c], m) for c in components]
        queries = np.concatenate([t[:, None] * b.components_[c][None, :] for t, c in zip(ts, components)]) \
            if components else np.zeros((0, len(b.components_[0])))
        if self.p.adjacent_repeats == "allow":
            _, ids = search(info["index"], queries, self.p.n_neighbours)
        else:
            ids = no_adjacent_repeats(info["index"], info["loc"], queries.reshape(len(components), m, queries.shape[1]),
                                      self.p.n_neighbours, self.p.adjacent_repeats, layer, basis)
        return [{"t": t, "locs": info["loc"][ids[j * m:(j + 1) * m]], "label": label(b, layer, basis, c),
                 "ratio": float(b.explained_variance_ratio_[c])} for j, (t, c) in enumerate(zip(ts, components))]

    def grid(self, layer: str, basis: str = "pca", component: int = 0) -> dict:
        """The grid of basis vector ``component`` (0-based, descending variance).

        Returns a dict: ``image`` (uint8 array), ``t`` (m,), ``locs`` (m, k, 3),
        ``ratio`` (its explained-variance ratio), ``label``.
        """
        g = self.plan(layer, basis, [component])[0]
        return {"image": self.draw(self.images, layer, g["locs"]), **g}

    def draw(self, images, layer: str, locs) -> np.ndarray:
        """The grid of ``locs`` (m, k, 3): patches of ``images``, or token contexts (:mod:`helpers.grids.text`)."""
        return text_grid(images, locs) if self.text else patch_grid(images, locs, self.fields[layer], self.p.thumb)


def no_adjacent_repeats(index, loc, queries, k: int, mode: str, layer: str = "", basis: str = "") -> np.ndarray:
    """Ids of the patches of grids in which no patch (``mode="patch"``) or image (``"image"``) is in two
    adjacent columns, or no patch is in two columns at all (``"grid"``).

    ``queries`` (g, m, d): the ``m`` targets, left to right, of ``g`` grids. Column ``j`` takes the ``k``
    nearest patches (ties as the search returns them) whose ``(image, y, x)`` (``"patch"``) or image
    (``"image"``) is not among column ``j - 1``'s chosen ones, or (``"grid"``) whose ``(image, y, x)`` no
    column before it chose. Searches ``2k`` neighbours (``"patch"``), ``4k`` (``"image"``) or ``m k``
    (``"grid"``) first and twice as many for a column that runs short, up to the whole index;
    ids ``-1`` (missing neighbours of an IVF index) are skipped. Returns int64 (g * m, k), rows grid by grid.

    With ``"patch"``, targets whose nearest patches are the same few alternate between two sets
    (A, B, A, B, …): the ordered grid is then the rougher one. ``"grid"`` moves each column further out
    instead.
    """
    if mode not in ("patch", "image", "grid"):
        raise ValueError(f"adjacent_repeats={mode!r} is unknown; use 'allow', 'patch', 'image' or 'grid'.")
    g, m, d = queries.shape
    total, flat = int(index.ntotal), queries.reshape(g * m, d)
    what = (lambda i: int(loc[i][0])) if mode == "image" else (lambda i: tuple(int(v) for v in loc[i]))
    width = min(total, {"patch": 2, "image": 4, "grid": m}[mode] * k)
    _, found = search(index, flat, width) if g * m and width else (None, np.zeros((g * m, 0), np.int64))
    searched = np.full(g * m, width)  # neighbours searched per query
    rows = list(np.asarray(found, np.int64))
    out = np.empty((g * m, k), np.int64)
    taken = [set() for _ in range(g)]  # the patches or images of each grid's column before
    for col in range(m):
        pending = list(range(g))
        while pending:
            short = []
            for grid in pending:
                q = grid * m + col
                chosen = [i for i in rows[q] if i >= 0 and what(i) not in taken[grid]][:k]
                if len(chosen) == k:
                    out[q] = chosen
                elif searched[q] >= total:
                    raise ValueError(
                        f"{layer} {basis}: even the whole index ({total} patches) has fewer than k={k} nearest "
                        f"patches for target {col + 1} of a grid that are not in the columns before "
                        f"(adjacent_repeats={mode!r}); use adjacent_repeats='allow' or a larger index_cap.")
                else:
                    short.append(grid)
            if short:
                qs = [grid * m + col for grid in short]
                width = int(min(total, 2 * searched[qs].max()))
                _, more = search(index, flat[qs], width)
                for q, r in zip(qs, np.asarray(more, np.int64)):
                    rows[q], searched[q] = r, width
            pending = short
        taken = [(taken[grid] if mode == "grid" else set()) | {what(i) for i in out[grid * m + col]}
                 for grid in range(g)]
    return out


class Displayed:
    """The ``display`` images of ``ids`` of a dataset, each decoded once, by ``workers`` threads (PIL
    releases the GIL while decoding), kept in memory: ``display(i)`` as the dataset's.

    Memory: every listed image as shown (``H x W x C`` bytes each).
    """

    def __init__(self, images, ids, workers: int = 0):
        from concurrent.futures import ThreadPoolExecutor

        ids = [int(i) for i in np.unique(np.asarray(ids, np.int64))]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            self.shown = dict(zip(ids, pool.map(images.display, ids)))

    def display(self, i) -> np.ndarray:
        return self.shown[int(i)]


def label(b, layer: str, basis: str, component: int) -> str:
    """``"conv2 PC 3 (4.1 % of variance)"`` or ``"conv2 neuron 17 (…)"`` for a fitted basis ``b``."""
    ratio = float(b.explained_variance_ratio_[component])
    name = f"neuron {int(b.order_[component])}" if basis == "neuron" else f"{KINDS[basis].unit} {component + 1}"
    return f"{layer} {name} ({100 * ratio:.1f} % of variance)"


def grids_key(p) -> dict:
    """What profile ``p``'s saved grids are made from: the grid settings and the sample, bases and index.

    The top ``max(n_show, n_study)`` grids of each basis are saved; ``nprobe`` counts only for an IVF index
    (a flat index ignores it). The one key of step 4.
    """
    index = provenance.require(p, "index")
    params = {"layers": list(p.layers), "n_grids": max(p.n_show, p.n_study), "n_targets": p.n_targets,
              "n_neighbours": p.n_neighbours, "thumb": p.thumb, "token_margin": float(p.token_margin),
              "adjacent_repeats": p.adjacent_repeats}
    if index["params"].get("kind") == "ivf":
        params["nprobe"] = p.nprobe
    return provenance.key(__name__, params, {"sample": provenance.require(p, "sample")["hash"],
                                             "bases": provenance.require(p, "bases")["hash"], "index": index["hash"]})


def visualizer_for(p) -> "Visualizer":
    """A :class:`Visualizer` over profile ``p``'s eval images and its model's receptive fields.

    It refuses artifacts that are not current for the profile (``provenance``).
    """
    model, _ = load_model(p, device="cpu", train=False)
    images = load_dataset(p, p.eval_split)
    fields = receptive_fields(model, p.layers, example(images), margin=p.token_margin)
    return Visualizer(p, images, fields, device=p.device, keys=provenance.keys(p, ("sample", "bases", "index")))


def make_grids(p) -> dict:
    """Step 4 for profile ``p``: its saved grids (reused when current); returns the sidecar."""
    key = grids_key(p)
    return write_grids(visualizer_for(p), p.artifact("grids"), key, max(p.n_show, p.n_study), profile=p.name)


def grid_path(folder, layer: str, basis: str, component: int) -> Path:
    """Where the grid of 0-based ``component`` lives: ``<folder>/<layer>/<basis>_<NNNN>.png``."""
    return Path(folder) / layer / f"{basis}_{component + 1:04d}.png"


def write_grids(vis: "Visualizer", folder, key: dict, n: int, profile: str = "") -> dict:
    """Save the grids of the top ``min(n, d)`` vectors of each basis of every layer (reused while current).

    Returns the artifact's sidecar.
    """
    from tqdm.auto import tqdm

    with store.Build(folder, key, GRIDS_MADE_BY, profile=profile, resumable=False) as b:
        if b.current:
            return b.meta
        files = []
        for layer in tqdm(vis.p.layers, desc="grids per layer"):
            for basis, grids in layer_grids(vis, layer, n).items():
                for j, g in enumerate(grids):
                    path = grid_path(b.partial, layer, basis, j)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with store.atomic(path) as tmp:
                        _pil(g["image"]).save(tmp, format="PNG")
                    files.append(str(path.relative_to(b.partial)))
                    if vis.text:  # the same cells as a table
                        files.append(str(write_html(path.with_suffix(".html"), vis.images, g).relative_to(b.partial)))
        return b.commit(files)


def saved_grids(vis: "Visualizer", folder, layer: str, n: int) -> dict:
    """``{basis: [{"image", "label"}]}`` of the top ``min(n, d)`` saved grids of a layer, for the figures."""
    out = {}
    for basis, b in vis.bases(layer).items():
        out[basis] = []
        for j in range(min(n, len(b.components_))):
            path = grid_path(folder, layer, basis, j)
            try:
                image = np.asarray(Image.open(path))
            except (OSError, ValueError) as e:
                raise store.CorruptArtifactError(f"{path} is corrupt ({e}); delete {folder} and rerun "
                                                 f"{GRIDS_MADE_BY}.") from None
            out[basis].append({"image": image[..., None] if image.ndim == 2 else image,
                               "label": label(b, layer, basis, j)})
    return out


def layer_grids(vis: "Visualizer", layer: str, n: int) -> dict:
    """``{basis: [grid dicts]}`` of the top ``min(n, d)`` vectors of each basis of a layer.

    One search per basis for all its grids' targets, and each image the grids show
    decoded once (:class:`Displayed`, the profile's ``num_workers`` threads); the
    grids are those :meth:`Visualizer.grid` draws one by one. Memory: the
    displayed images of one layer's grids (at most ``n x bases x n_targets x
    n_neighbours`` images).
    """
    planned = {basis: vis.plan(layer, basis, range(min(n, len(b.components_))))
               for basis, b in vis.layer(layer)["bases"].items()}
    ids = [g["locs"][..., 0].ravel() for grids in planned.values() for g in grids]
    shown = vis.images if vis.text else Displayed(vis.images, np.concatenate(ids) if ids else [], vis.p.num_workers)
    return {basis: [{"image": vis.draw(shown, layer, g["locs"]), **g} for g in grids]
            for basis, grids in planned.items()}


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)


def grid_png(image: np.ndarray, scale: int = 1) -> bytes:
    """A grid (H, W) or (H, W, C) as PNG bytes, enlarged ``scale`` times (nearest), for widgets."""
    import io

    buf = io.BytesIO()
    pil = _pil(image)
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def toy_example(n: int = 2000, m: int = 7, seed: int = 0) -> dict:
    """Fig. 12's toy: visualising basis vector V1 = (1, 0) of correlated 2-D activations.

    Activation maximisation, regularised by the data's Gaussian prior,
    ``argmax_a  V1·a - (a - mean)ᵀ Σ⁻¹ (a - mean) / (2c)  =  mean + c Σ V1``,
    moves along ``Σ V1`` as the strength ``c`` grows: off the V1 axis, mixing
    in the correlated direction. Distance minimisation takes the data points
    nearest to targets ``mean + t V1`` and stays on the axis.
    """
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(35)
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    data = (rng.standard_normal((n, 2)) * [2.0, 0.6]) @ R.T
    mean, cov = data.mean(0), np.cov(data, rowvar=False)
    v1 = np.array([1.0, 0.0])
    proj = (data - mean) @ v1
    t = targets(proj.min(), proj.max(), m)
    direction = cov @ v1
    act_max = mean + np.linspace(0, proj.max(), m)[:, None] / (direction @ v1) * direction
    goal = mean + t[:, None] * v1
    dist_min = data[np.argmin(((data[None] - goal[:, None]) ** 2).sum(-1), axis=1)]
    return {"data": data, "mean": mean, "v1": v1, "targets": goal, "activation_max": act_max,
            "distance_min": dist_min}


def grid_shape(p, scale) -> tuple:
    """``(height, width, channels)`` of one grid's image."""
    side = p.thumb + 2
    return p.n_neighbours * side - 2, p.n_targets * side - 2, scale.input_shape[0]


def _cost(p, scale) -> costs.Cost:
    """A PNG per grid (the top ``max(n_show, n_study)`` vectors of every basis and layer); per layer one
    exact search of every grid's targets in its index (held in memory) and the shown images read again."""
    from ..bases.kinds import vectors
    from ..search.index import indexed

    n_grids = max(p.n_show, p.n_study)
    out = costs.Cost()
    for layer in p.layers:
        N, d = indexed(p, scale, layer), scale.d(layer)
        grids = sum(min(n_grids, k) for k in vectors(p, scale, layer).values())
        queries = grids * p.n_targets
        out = out + costs.Cost(disk=grids * costs.png_bytes(*grid_shape(p, scale)), host=N * d * 4,
                               device=N * d * 4,
                               work={"flop32": 2 * queries * N * d,
                                     "images": min(scale.images["eval"], queries * p.n_neighbours)})
    return out


STEP = provenance.declare(
    __name__, "04_visualize", "grids", key=grids_key, reads=("model", "sample", "bases", "index"), build=make_grids,
    settings=("layers", "n_show", "n_study", "n_targets", "n_neighbours", "nprobe", "thumb", "token_margin",
              "adjacent_repeats"),
    uses=("model", "eval_split", "bases", "seed", "device"),
    outputs=(provenance.Output("fig_grids_{layer}"), provenance.Output("fig12_toy_distance_vs_activation")),
    cost=_cost)
