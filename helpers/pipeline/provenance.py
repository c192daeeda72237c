"""Each step of the method, declared once; what every artifact is made from, given a profile.

A step's module declares it with :func:`declare` (in the spirit of torchvision's ``register_model``):
the notebook it belongs to, the artifact it makes, the artifacts it reads, the settings that shape it,
its one key function, the function that builds it for a profile, the function each ``torch.distributed``
rank runs, its outputs (figures and tables) and its cost. Everything else reads the declarations: the
graph (:func:`notebooks`, :func:`upstream`), the runner's plan, ``helpers.verify``, the dry run, the
site and the controls. This module imports no step; :mod:`helpers.steps` imports every step's module.

    01_sample   model (stand-ins only), sample   <- training / sample images, model
    02_pca      bases                            <- sample
    03_index    index                            <- model, eval images, bases (+ sample for IVF)
    04_visualize grids                           <- sample, bases, index
    05_ablation ablation                         <- model, eval images, bases
    06_user_study stimuli                        <- grids
                  machine (machine scores)       <- sample, bases, index
    07_user_study_analysis                       <- stimuli, machine (and the response logs)
    08_compositional compositional               <- model, bases, probe images and concepts, eval images

:func:`expected` computes the key an artifact must have for a profile (its settings, which images, the
model id, the content hash of each upstream artifact, the code: :func:`code`), from the upstream
artifacts on disk, which must be current themselves. Artifacts of different settings live side by side:
:func:`folder` is ``data/<profile>/<model>/<artifact>/<id>``, ``id`` a digest of the key's settings and
inputs. :func:`require` reads an artifact and refuses it, naming what changed and the step to rerun,
when it is not what the profile asks for; :func:`ensure` builds it (and what it reads) when it is not
there; :func:`status` says current / missing / stale / corrupt without raising.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable

from . import keys as _keys
from . import settings, store
from .checks import Missing, needs, preflight, register_check, register_need  # noqa: F401  (steps' names)
from .imports import closure
from .keys import differences
from .settings import Profile


@dataclass(frozen=True)
class Output:
    """A figure or table a notebook writes into ``figures/<profile>/<model>/``.

    ``name``: a figure's stem (written as ``.png`` and ``.pdf``) or a table's file name (``.csv``),
    ``{layer}`` standing for each of the profile's layers;
    ``caption``: shown by the demo site (figures with one are published); ``gather``: the name of the
    controls' table that gathers it (``controls_<gather>.csv``); ``when(p)``: written only for such
    profiles (default: always).
    """

    name: str
    caption: str = ""
    gather: str = ""
    when: Callable | None = None

    def files(self, p) -> tuple:
        """The files it is written as for profile ``p``."""
        names = [self.name.format(layer=layer) for layer in p.layers] if "{layer}" in self.name else [self.name]
        return tuple(f for n in names for f in ((n,) if "." in n else (f"{n}.png", f"{n}.pdf")))


@dataclass(frozen=True)
class Step:
    """One step of the method as its module declares it (:func:`declare`).

    Attributes
    ----------
    notebook : str
        ``"02_pca"``: the notebook that runs it (its number orders the steps).
    artifact : str or None
        What it makes (``None`` for a step that only draws, e.g. 07).
    key : callable
        ``key(p) -> dict``: the artifact's key for profile ``p``, the one function the driver, the ranks and
        provenance call (it may :func:`require` upstream artifacts for their hashes).
    reads : tuple
        The artifacts it is made from (or, for a step without artifact, draws from).
    settings : tuple
        The settings that shape it (its key): a notebook that reads the artifact inherits them.
    uses : tuple
        The other settings its code reads (batch size, device, ...). The notebook's parameters cell lists
        ``settings`` and ``uses``.
    build : callable
        ``build(p) -> sidecar``: make it for ``p`` (reused when current).
    rank : callable
        ``rank(p, **job)``: what each ``torch.distributed`` rank runs (a function, not a name).
    outputs : tuple of Output
        The figures and tables its notebook writes from it.
    cost, applies, why_not, optional : callable
        ``cost(p, scale)``: disk, memory and work (:mod:`helpers.pipeline.costs`); ``applies(p)``: whether
        the profile has it; ``why_not(p)``: what to give when it does not; ``optional``: ``{artifact:
        reads_it(p)}`` for an upstream artifact read only by some profiles.
    module : str
        The declaring module (its import closure is the artifact's code).
    """

    notebook: str
    artifact: str | None = None
    key: Callable | None = None
    reads: tuple = ()
    settings: tuple = ()
    uses: tuple = ()
    build: Callable | None = None
    rank: Callable | None = None
    outputs: tuple = ()
    cost: Callable | None = None
    applies: Callable | None = None
    why_not: Callable | None = None
    optional: dict | None = None
    module: str = ""

    @property
    def number(self) -> str:
        return self.notebook.split("_")[0]


@dataclass(frozen=True)
class Notebook:
    """A notebook's steps together: what it makes, what it reads, what it writes."""

    notebook: str
    makes: tuple
    reads: tuple
    outputs: tuple


_DECLARED: dict[tuple, Step] = {}


def declare(module: str, notebook: str, artifact: str | None = None, **facts) -> Step:
    """Declare a step: called once, at the bottom of the module that computes it (``declare(__name__, ...)``).

    See :class:`Step` for the facts. Returns the declaration (the module keeps it as ``STEP``).
    """
    name = module.split(".", 1)[1] if module.startswith("helpers.") else module
    step = Step(notebook, artifact, module=name, **facts)
    if artifact is not None and step.key is None:
        raise ValueError(f"step {notebook} declares artifact {artifact!r} without its key function (key=).")
    _DECLARED[(notebook, artifact)] = step
    return step


def _steps() -> list[Step]:
    return sorted(_DECLARED.values(), key=lambda s: s.number)


def artifacts() -> tuple:
    """The declared artifacts, upstream first (in the order of the notebooks)."""
    return tuple(s.artifact for s in _steps() if s.artifact)


def notebooks() -> dict[str, Notebook]:
    """``{number: Notebook}``: each notebook's declared steps together, in order."""
    out = {}
    for s in _steps():
        nb = out.get(s.number, Notebook(s.notebook, (), (), ()))
        makes = nb.makes + ((s.artifact,) if s.artifact else ())
        reads = tuple(dict.fromkeys(nb.reads + tuple(r for r in s.reads if r not in makes)))
        out[s.number] = Notebook(s.notebook, makes, reads, nb.outputs + tuple(s.outputs))
    return out


def notebook_applies(p: Profile, number: str) -> bool:
    """Whether the profile has any artifact notebook ``number`` makes (or, making none, reads): 08 without
    concepts has none, nor 06-08 for a language model."""
    nb = notebooks().get(number)
    uses = (nb.makes or nb.reads) if nb else ()
    return not uses or any(applies(p, a) for a in uses)


def producer(artifact: str) -> Step:
    """The declaration of the step that makes ``artifact``."""
    for s in _DECLARED.values():
        if s.artifact == artifact:
            return s
    known = artifacts()
    if known:
        raise ValueError(f"artifact={artifact!r} is made by no declared step; the steps make {list(known)}.")
    raise LookupError(f"no step has declared artifact {artifact!r} in this process: import its step's module "
                      "or helpers.steps (which imports every step).")


def made_by(p: Profile, artifact: str) -> str:
    """The step that makes an artifact, as a command: ``02_pca (python -m helpers.run ... --only 02)``."""
    s = producer(artifact)
    return f"{s.notebook} (python -m helpers.run --profile {p.name} --only {s.number})"


def code(module: str) -> tuple:
    """The modules whose code makes ``module``'s artifact: every module of ``helpers`` it imports,
    transitively (:func:`helpers.pipeline.imports.closure`), but for ``pipeline`` (settings, storage,
    provenance: where and whether an artifact is made, not what it holds) and the modules of the steps that
    make the artifacts it reads (those enter its key by their content hash)."""
    name = module.split(".", 1)[1] if module.startswith("helpers.") else module
    reads = {a for s in _DECLARED.values() if s.module == name for a in s.reads}
    upstream = {producer(a).module for a in reads} - {name}
    return closure(name, skip=("pipeline", "__init__", *upstream))


def key(module: str, params: dict, inputs: dict | None = None) -> dict:
    """An artifact's key (:func:`helpers.pipeline.keys.key`) with the code of ``module``'s closure (:func:`code`)."""
    return _keys.key(params, inputs, code(module))


def cost(p: Profile, artifact: str, scale):
    """The :class:`helpers.pipeline.costs.Cost` of making ``artifact`` for ``p``, or ``None`` if undeclared."""
    fn = producer(artifact).cost
    return fn(p, scale) if fn else None


def applies(p: Profile, artifact: str) -> bool:
    """Whether the profile has this artifact (a published model has no ``model`` artifact; a profile
    without concepts, e.g. ImageNet without ``broden_root``, no compositional explanations)."""
    fn = producer(artifact).applies
    return bool(fn(p)) if fn else True


def why_not(p: Profile, artifact: str) -> str:
    """Why profile ``p`` has no ``artifact`` and what to give for it."""
    reason = producer(artifact).why_not
    return reason(p) if reason else f"{artifact} does not apply to profile {p.name!r}"


def upstream(p: Profile, artifact: str) -> tuple:
    """The artifacts this one is made from, for this profile."""
    s = producer(artifact)
    return tuple(a for a in s.reads if (s.optional or {}).get(a, lambda p: True)(p) and applies(p, a))


def expected(p: Profile, artifact: str) -> dict:
    """The key ``artifact`` must have for profile ``p``, given the current upstream artifacts.

    Raises like :func:`require` when an upstream artifact is missing, stale or corrupt.
    """
    return producer(artifact).key(p)


def identity(k: dict) -> str:
    """The folder name of an artifact of key ``k``: a digest of its settings (but ``layers``: an artifact of
    more layers serves fewer, and one of other layers is remade in place) and its inputs. Code is left out:
    an artifact made by older code is remade in place, never kept beside the current one."""
    part = {"params": {n: v for n, v in k["params"].items() if n != "layers"}, "inputs": k["inputs"]}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:12]


def folder(p: Profile, artifact: str):
    """Where ``artifact`` for profile ``p`` lives: ``<data_path>/<artifact>/<id>`` (:func:`identity`).

    Raises like :func:`require` when an upstream artifact it is made from is missing, stale or corrupt.
    """
    return p.data_path / artifact / identity(expected(p, artifact))


def _folders(p: Profile, name: str):
    """``p.artifact(name)``: a declared artifact's :func:`folder`; ``"responses"`` (the study's logs), one folder
    per stimuli set."""
    if name == "responses":
        return p.data_path / name / folder(p, "stimuli").name
    return folder(p, name)


settings.FOLDERS = _folders


def require(p: Profile, artifact: str) -> dict:
    """The sidecar of ``artifact``, refused unless it is exactly what profile ``p`` asks for.

    Raises
    ------
    store.MissingArtifactError, store.StaleArtifactError, store.CorruptArtifactError
        Naming the artifact (or the upstream one at fault), what differs, and
        the step to rerun.
    """
    by, k = made_by(p, artifact), expected(p, artifact)
    where = p.data_path / artifact / identity(k)
    store.read_meta(where, made_by=by)  # its own sidecar and files first
    return store.read_meta(where, k, by, check=False)


def ensure(p: Profile, artifact: str) -> dict:
    """The sidecar of ``artifact`` for ``p``, built first (and whatever it is made from) when it is missing,
    stale or corrupt: a notebook opens the artifact its own settings ask for."""
    for up in upstream(p, artifact):
        ensure(p, up)
    state, why = status(p, artifact)
    if state != "current":
        s = producer(artifact)
        store.say(f"{artifact} is {state} for these settings ({why}): making it ({s.notebook}'s step)")
        s.build(p)
    return require(p, artifact)


def ensure_reads(p: Profile, notebook: str) -> None:
    """:func:`ensure` every artifact notebook ``notebook`` (number or name) reads, for its settings."""
    for artifact in notebooks()[notebook.split("_")[0]].reads:
        if applies(p, artifact):
            ensure(p, artifact)


def keys(p: Profile, artifacts) -> dict:
    """``{artifact: expected key}`` for several artifacts."""
    return {a: expected(p, a) for a in artifacts}


def status(p: Profile, artifact: str, full: bool = False, known: dict | None = None) -> tuple[str, str]:
    """``(state, why)``: ``current``, ``missing``, ``stale`` or ``corrupt``.

    ``full`` hashes every file of the artifact (not only those whose times
    changed); ``known`` holds states already found for upstream artifacts.
    """
    by = made_by(p, artifact)
    for up in upstream(p, artifact):
        state = (known or {}).get(up) or status(p, up)[0]
        if state == "missing":
            return "missing", f"needs {up}, which is missing ({made_by(p, up).split(' ')[0]} makes it)"
        if state != "current":
            return "stale", f"made from {up}, which is {state} ({made_by(p, up).split(' ')[0]} remakes it)"
    k = expected(p, artifact)
    where = p.data_path / artifact / identity(k)
    try:
        meta = store.verify(where, by) if full else store.read_meta(where, made_by=by)
    except store.MissingArtifactError:
        older = p.data_path / artifact / store.META
        return "missing", f"not made yet for these settings ({by})" + (
            f"; {older.parent} holds one of the layout without a folder per setting, which nothing reads "
            "(make prune removes it)" if older.exists() else "")
    except store.CorruptArtifactError as e:
        return "corrupt", str(e)
    diffs = differences(meta, k)
    if diffs:
        return "stale", f"made from {'; '.join(diffs)}"
    return "current", f"{meta['hash'][:19]}…"


def outputs(p: Profile, notebook: str) -> tuple:
    """The :class:`Output` s notebook ``notebook`` (number or name) writes for profile ``p``."""
    nb = notebooks()[notebook.split("_")[0]]
    return tuple(o for o in nb.outputs if o.when is None or o.when(p))


def record_outputs(p: Profile, notebook: str) -> list:
    """Note in ``figures/<profile>/<model>/provenance.json`` what made each output of ``notebook``.

    Each declared output (:func:`outputs`) that is there gets the notebook, the content hashes of the
    artifacts the notebook makes and reads, the settings and the time; an entry is replaced when its file
    is made again. Returns the files recorded.
    """
    import dataclasses
    import time

    from .locks import Lock

    nb = notebooks()[notebook.split("_")[0]]
    names = [f for o in outputs(p, notebook) for f in o.files(p) if (p.figures_path / f).exists()]
    used = [a for a in nb.makes + nb.reads if applies(p, a)]
    entry = {"made_by": nb.notebook, "from": {a: require(p, a)["hash"] for a in used},
             "settings": dataclasses.asdict(p), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = p.figures_path / "provenance.json"
    p.figures_path.mkdir(parents=True, exist_ok=True)
    with Lock(p.figures_path / ".locks" / "provenance.lock", str(path)):
        table = store.read_json(path) if path.exists() else {}
        table.update({name: entry for name in names})
        store.write_json(path, table)
    return names
