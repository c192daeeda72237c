"""What every artifact is made from, given a profile: the one place that knows the chain.

Each notebook makes artifacts from upstream ones::

    01_sample   model (stand-ins only), sample   <- training / sample images, model
    02_pca      bases                            <- sample
    03_index    index                            <- model, eval images, bases (+ sample for IVF)
    04_visualize grids                           <- sample, bases, index
    05_ablation ablation                         <- model, eval images, bases
    06_user_study stimuli                        <- grids
    07_user_study_analysis                       <- stimuli (and the response logs)
    08_compositional compositional               <- model, bases, probe images and concepts, eval images

:func:`expected` computes the key an artifact must have for a profile (its
settings, which images, the model id, the content hash of each upstream
artifact, the code), from the upstream artifacts on disk — which must be
current themselves. :func:`require` reads an artifact and refuses it, naming
what changed and the step to rerun, when it is not what the profile asks for.
:func:`status` says current / missing / stale / corrupt without raising; the
runner plans with it and ``helpers.verify`` reports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import store
from .keys import differences
from .config import Profile
from .data import images_key, load_dataset, select


@dataclass(frozen=True)
class Step:
    notebook: str
    makes: tuple
    reads: tuple


STEPS = {
    "01": Step("01_sample", ("model", "sample"), ()),
    "02": Step("02_pca", ("bases",), ("sample",)),
    "03": Step("03_index", ("index",), ("model", "bases", "sample")),
    "04": Step("04_visualize", ("grids",), ("model", "sample", "bases", "index")),
    "05": Step("05_ablation", ("ablation",), ("model", "bases")),
    "06": Step("06_user_study", ("stimuli",), ("grids",)),
    "07": Step("07_user_study_analysis", (), ("stimuli",)),
    "08": Step("08_compositional", ("compositional",), ("model", "bases")),
}
"""Each step (notebook number): the artifacts it makes and those it reads."""
PRODUCER = {a: number for number, step in STEPS.items() for a in step.makes}
ARTIFACTS = tuple(PRODUCER)


def made_by(p: Profile, artifact: str) -> str:
    """The step that makes an artifact, as a command: ``02_pca (python -m helpers.run ... --only 02)``."""
    number = PRODUCER[artifact]
    return f"{STEPS[number].notebook} (python -m helpers.run --profile {p.name} --only {number})"


def applies(p: Profile, artifact: str) -> bool:
    """Whether the profile has this artifact (a published model has no ``model`` artifact; a profile
    without concepts, e.g. ImageNet without ``broden_root``, no compositional explanations)."""
    from .explain import concepts_source
    from .models import is_trained_here

    if artifact == "compositional":
        return concepts_source(p) is not None
    return artifact != "model" or (is_trained_here(p.model) and p.retrain)


def upstream(p: Profile, artifact: str) -> tuple:
    """The artifacts this one is made from, for this profile."""
    direct = {"model": (), "sample": ("model",), "bases": ("sample",),
              "index": ("model", "bases") + (("sample",) if p.index_kind == "ivf" else ()),
              "grids": ("sample", "bases", "index"), "ablation": ("model", "bases"),
              "stimuli": ("grids",), "compositional": ("model", "bases")}[artifact]
    return tuple(a for a in direct if applies(p, a))


def selection(p: Profile, which: str):
    """``(dataset, indices)`` of the images a step uses.

    ``which``: ``"sample"`` (01: ``n_sample`` of the sample split), ``"eval"``
    (03, 04: ``n_eval`` of the eval split) or ``"ablation"`` (05: a seeded
    ``ablation_eval`` of those).
    """
    split = p.sample_split if which == "sample" else p.eval_split
    dataset = load_dataset(p, split)
    indices = select(len(dataset), p.n_sample if which == "sample" else p.n_eval, p.seed)
    if which == "ablation":
        indices = indices[select(len(indices), p.ablation_eval, p.seed)]
    return dataset, indices


def model_id(p: Profile) -> str:
    """The id of the profile's model: its checkpoint's hash (stand-ins, shipped or trained here) or its
    weights' name."""
    from . import shipped
    from .models import is_trained_here, trained_id, weights_id

    if not is_trained_here(p.model):
        return weights_id(p.model, p.seed)
    return trained_id(require(p, "model")) if p.retrain else shipped.model_id(p.model)


def expected(p: Profile, artifact: str) -> dict:
    """The key ``artifact`` must have for profile ``p``, given the current upstream artifacts.

    Raises like :func:`require` when an upstream artifact is missing, stale or corrupt.
    """
    from . import ablation, bases, sampling, search, study, visualize
    from .models import checkpoint_key

    if artifact == "model":
        return checkpoint_key(p)
    if artifact == "sample":
        return sampling.sample_key(p.layers, p.seed, images_key(*selection(p, "sample")), model_id(p))
    if artifact == "bases":
        return bases.bases_key(p.layers, require(p, "sample")["hash"], p.bases, bases.learned_settings(p))
    if artifact == "index":
        sample = require(p, "sample")["hash"] if p.index_kind == "ivf" else None
        return search.index_key(p.layers, images_key(*selection(p, "eval")), model_id(p),
                                require(p, "bases")["hash"], cap=p.index_cap, kind=p.index_kind,
                                nlist=p.nlist, seed=p.seed, sample_hash=sample)
    if artifact == "grids":
        return visualize.grids_key(p.layers, max(p.n_show, p.n_study), p.n_targets, p.n_neighbours, p.thumb,
                                   p.nprobe, sample_hash=require(p, "sample")["hash"],
                                   bases_hash=require(p, "bases")["hash"], index_meta=require(p, "index"),
                                   token_margin=p.token_margin)
    if artifact == "ablation":
        return ablation.ablation_key(p.layers, images_key(*selection(p, "ablation")), model_id(p),
                                     require(p, "bases")["hash"], dense=p.ablation_dense)
    if artifact == "stimuli":
        return study.stimuli_key(p, expected(p, "grids"))
    if artifact == "compositional":
        from .explain import explain_key

        return explain_key(p)
    raise ValueError(f"artifact={artifact!r} is unknown; artifacts are {list(ARTIFACTS)}.")


def require(p: Profile, artifact: str) -> dict:
    """The sidecar of ``artifact``, refused unless it is exactly what profile ``p`` asks for.

    Raises
    ------
    store.MissingArtifactError, store.StaleArtifactError, store.CorruptArtifactError
        Naming the artifact (or the upstream one at fault), what differs, and
        the step to rerun.
    """
    by = made_by(p, artifact)
    store.read_meta(p.artifact(artifact), made_by=by)  # its own sidecar and files first
    return store.read_meta(p.artifact(artifact), expected(p, artifact), by, check=False)


def keys(p: Profile, artifacts) -> dict:
    """``{artifact: expected key}`` for several artifacts."""
    return {a: expected(p, a) for a in artifacts}


def status(p: Profile, artifact: str, full: bool = False, known: dict | None = None) -> tuple[str, str]:
    """``(state, why)``: ``current``, ``missing``, ``stale`` or ``corrupt``.

    ``full`` hashes every file of the artifact (not only those whose times
    changed); ``known`` holds states already found for upstream artifacts.
    """
    folder, by = p.artifact(artifact), made_by(p, artifact)
    try:
        meta = store.verify(folder, by) if full else store.read_meta(folder, made_by=by)
    except store.MissingArtifactError:
        return "missing", f"not made yet ({by})"
    except store.CorruptArtifactError as e:
        return "corrupt", str(e)
    for up in upstream(p, artifact):
        state = (known or {}).get(up) or status(p, up)[0]
        if state != "current":
            return "stale", f"made from {up}, which is {state} ({made_by(p, up).split(' ')[0]} remakes it)"
    diffs = differences(meta, expected(p, artifact))
    if diffs:
        return "stale", f"made from {'; '.join(diffs)}"
    return "current", f"{meta['hash'][:19]}…"


def record_outputs(p: Profile, notebook: str, names, artifacts) -> None:
    """Note in ``figures/<profile>/provenance.json`` what made each figure or table.

    Each of ``names`` (files in the figures folder) gets the notebook, the
    content hashes of the ``artifacts`` it was drawn from, the settings and
    the time; an entry is replaced when its file is made again.
    """
    import dataclasses
    import time

    from .locks import Lock

    entry = {"made_by": notebook, "from": {a: require(p, a)["hash"] for a in artifacts if applies(p, a)},
             "settings": dataclasses.asdict(p), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = p.figures_path / "provenance.json"
    p.figures_path.mkdir(parents=True, exist_ok=True)
    with Lock(p.figures_path / ".locks" / "provenance.lock", str(path)):
        table = store.read_json(path) if path.exists() else {}
        table.update({name: entry for name in names})
        store.write_json(path, table)
