"""What every artifact is made from, given a profile: the one place that knows the chain.

Each notebook makes artifacts from upstream ones::

    01_sample   model (stand-ins only), sample   <- training / sample images, model
    02_pca      bases                            <- sample
    03_index    index                            <- model, eval images, bases (+ sample for IVF)
    04_visualize grids                           <- sample, bases, index
    05_ablation ablation                         <- model, eval images, bases
    06_user_study stimuli                        <- grids
                  machine (machine scores)       <- sample, bases, index
    07_user_study_analysis                       <- stimuli, machine (and the response logs)
    08_compositional compositional               <- model, bases, probe images and concepts, eval images

Each step owns the key of what it makes: its module calls :func:`register`
(the artifact, how its key is computed for a profile, what it is made from,
whether a profile has it), and :mod:`helpers.steps` lists those modules; this
module reads the registrations and imports no step. :func:`expected` computes
the key an artifact must have for a profile (its settings, which images, the
model id, the content hash of each upstream artifact, the code), from the
upstream artifacts on disk — which must be current themselves.
:func:`require` reads an artifact and refuses it, naming what changed and the
step to rerun, when it is not what the profile asks for. :func:`status` says
current / missing / stale / corrupt without raising; the runner plans with it
and ``helpers.verify`` reports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import store
from .keys import differences
from .settings import Profile


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
    "06": Step("06_user_study", ("stimuli", "machine"), ("grids", "sample", "bases", "index")),
    "07": Step("07_user_study_analysis", (), ("stimuli", "machine")),
    "08": Step("08_compositional", ("compositional",), ("model", "bases")),
}
"""Each step (notebook number): the artifacts it makes and those it reads."""


PRODUCER = {a: number for number, step in STEPS.items() for a in step.makes}


ARTIFACTS = tuple(PRODUCER)


def made_by(p: Profile, artifact: str) -> str:
    """The step that makes an artifact, as a command: ``02_pca (python -m helpers.run ... --only 02)``."""
    number = PRODUCER[artifact]
    return f"{STEPS[number].notebook} (python -m helpers.run --profile {p.name} --only {number})"


@dataclass(frozen=True)
class Artifact:
    """A step's registration of what it makes (see :func:`register`)."""

    name: str
    key: Callable
    upstream: Callable
    applies: Callable
    why_not: Callable | None = None
    cost: Callable | None = None


@dataclass(frozen=True)
class Missing:
    """Something a step needs that is not here (weights not cached, a package, a dataset).

    ``fetch()``, when given, gets it now (a run calls it before any kernel starts; a dry run does not);
    ``download`` is its size in bytes where known.
    """

    what: str
    why: str
    fix: str
    fetch: Callable | None = None
    download: int | None = None

    def line(self) -> str:
        """``"<what>: <why>; <fix>"``: one line for the user."""
        return f"{self.what}: {self.why}; {self.fix}"


_REGISTRY: dict[str, Artifact] = {}
_CHECKS: list = []
_NEEDS: list = []


def register(name: str, key: Callable, upstream=(), applies: Callable | None = None,
             why_not: Callable | None = None, cost: Callable | None = None) -> None:
    """Say how artifact ``name`` is keyed: called once by the module of the step that makes it.

    Parameters
    ----------
    key : callable
        ``key(p) -> dict``: the key the artifact must have for profile ``p``
        (it may :func:`require` upstream artifacts for their hashes).
    upstream : tuple or callable
        The artifacts it is made from, or ``upstream(p) -> tuple``.
    applies : callable, optional
        ``applies(p) -> bool``: whether profile ``p`` has this artifact (default: always).
    why_not : callable, optional
        ``why_not(p) -> str``: what to give when a step is asked for but its artifact does not apply.
    cost : callable, optional
        ``cost(p, scale) -> helpers.pipeline.costs.Cost``: the disk, memory and work of making it
        (``scale``: :class:`helpers.pipeline.costs.Scale`), for the dry run and the disk check.
    """
    if name not in PRODUCER:
        raise ValueError(f"artifact {name!r} is made by no step; the steps make {list(ARTIFACTS)}.")
    ups = upstream if callable(upstream) else (lambda p, ups=tuple(upstream): ups)
    _REGISTRY[name] = Artifact(name, key, ups, applies or (lambda p: True), why_not, cost)


def register_check(check: Callable) -> None:
    """Add ``check(p)``, run by the runner before any kernel starts (raises on what cannot work)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def register_need(need: Callable, steps: tuple) -> None:
    """Add ``need(p) -> list of Missing``: what steps ``steps`` (notebook numbers) need that may not be here.

    The runner asks every need of the steps it will run before any kernel starts: it fetches what can be
    fetched and refuses, one line each with the fix, what cannot; the dry run lists them.
    """
    if (need, tuple(steps)) not in _NEEDS:
        _NEEDS.append((need, tuple(steps)))


def needs(p: Profile, numbers) -> list:
    """The :class:`Missing` components of the steps ``numbers`` for profile ``p``, each once."""
    out, seen = [], set()
    for need, steps in _NEEDS:
        if set(steps) & set(numbers) and need not in seen:
            seen.add(need)
            out.extend(need(p))
    return out


def cost(p: Profile, artifact: str, scale):
    """The :class:`helpers.pipeline.costs.Cost` of making ``artifact`` for ``p``, or ``None`` if unregistered."""
    fn = _registered(artifact).cost
    return fn(p, scale) if fn else None


def _registered(artifact: str) -> Artifact:
    if artifact not in PRODUCER:
        raise ValueError(f"artifact={artifact!r} is unknown; artifacts are {list(ARTIFACTS)}.")
    if artifact not in _REGISTRY:
        raise LookupError(f"no step has registered artifact {artifact!r} in this process: import the module of "
                          f"{STEPS[PRODUCER[artifact]].notebook} or helpers.steps (which imports every step).")
    return _REGISTRY[artifact]


def preflight(p: Profile) -> None:
    """Run every registered check on profile ``p`` (a missing split, a model that cannot take the images)."""
    for check in _CHECKS:
        check(p)


def applies(p: Profile, artifact: str) -> bool:
    """Whether the profile has this artifact (a published model has no ``model`` artifact; a profile
    without concepts, e.g. ImageNet without ``broden_root``, no compositional explanations)."""
    return bool(_registered(artifact).applies(p))


def why_not(p: Profile, artifact: str) -> str:
    """Why profile ``p`` has no ``artifact`` and what to give for it."""
    reason = _registered(artifact).why_not
    return reason(p) if reason else f"{artifact} does not apply to profile {p.name!r}"


def upstream(p: Profile, artifact: str) -> tuple:
    """The artifacts this one is made from, for this profile."""
    return tuple(a for a in _registered(artifact).upstream(p) if applies(p, a))


def expected(p: Profile, artifact: str) -> dict:
    """The key ``artifact`` must have for profile ``p``, given the current upstream artifacts.

    Raises like :func:`require` when an upstream artifact is missing, stale or corrupt.
    """
    return _registered(artifact).key(p)


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
