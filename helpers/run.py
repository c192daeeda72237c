"""Run the notebooks in order with papermill, rerunning stale steps first (as make does).

    python -m helpers.run --profile quick                 # every notebook
    python -m helpers.run --profile quick --only 03 04    # these, after whatever they need
    python -m helpers.run --profile paper -p data_root=/data/imagenet -p batch_size=512
    python -m helpers.run --only 05 --no-wait             # fail, not wait, if 05 is running elsewhere
    python -m helpers.run --only 01 --restart             # discard unfinished work instead of resuming
    python -m helpers.run --profile paper -p data_root=/data/imagenet --dry-run   # the plan and its cost

Before any kernel starts, every setting is validated (types and ranges), the
splits and the model are checked against the dataset, and a plan is printed:
a step you ask for runs after every step whose artifact it reads is missing,
stale or corrupt (made from other settings, images, model, code or upstream
artifacts) or is remade earlier in the run; the plan says why each extra step
runs. Only one run writes an artifact at a time: a second waits, naming the
first (``--no-wait``: fails instead). Kernels import this checkout's
``helpers`` (its root is put first on their path, and checked). Executed
copies go to ``data/<profile>/notebooks/``; when a notebook fails or its
kernel dies, the message names the executed copy and the likely cause.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from . import estimate
from . import steps as _steps  # noqa: F401  importing the catalogue declares every step
from .pipeline import provenance
from .pipeline.kernels import QUIET, _oom_kills, diagnose, kernel_environment, parse_parameters
from .pipeline.locks import Lock, LockedError
from .models.registry import spec
from .pipeline.settings import PROFILES, ROOT, SETTINGS, load_profile

NOTEBOOKS = ROOT / "notebooks"


def find_notebooks(only=None, folder=NOTEBOOKS) -> list[Path]:
    """The numbered notebooks in order; ``only`` keeps those whose number or name matches."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    chosen = [nb for nb in found if any(nb.stem == o or nb.stem.split("_")[0] == o.zfill(2) for o in only)]
    missing = [o for o in only if not any(nb.stem == o or nb.stem.split("_")[0] == o.zfill(2) for nb in found)]
    if missing:
        raise ValueError(f"--only {missing}: no such notebook; available: {[nb.stem for nb in found]}.")
    return chosen


def preflight(p) -> None:
    """Refuse, before any kernel starts, what cannot work: a missing split, a model that cannot take the images,
    a device torch cannot see."""
    provenance.preflight(p)


def provide(missing, say) -> None:
    """Fetch what can be fetched of ``missing`` (weights into their caches), then refuse, one line each with
    the fix, what is still missing."""
    lines = []
    for m in missing:
        if m.fetch is None:
            lines.append(m.line())
            continue
        say(f"fetching {m.what} ({m.why})")
        try:
            m.fetch()
        except Exception as e:  # noqa: BLE001 - whatever a download or an unzip raises, it is reported
            lines.append(f"{m.what}: {m.why}, and fetching failed ({type(e).__name__}: {str(e)[:200]}); {m.fix}")
    if lines:
        raise ValueError("\n".join(lines))


def plan(p, chosen: list[Path], available: list[Path]) -> list[tuple[Path, str]]:
    """The notebooks to run, in order, each with why: asked for, or needed by one that is.

    A needed step is one that makes an artifact a chosen step reads, when that
    artifact is missing, stale or corrupt, or when a step before it reruns.
    """
    by_number = {nb.stem.split("_")[0]: nb for nb in available}
    why = {nb.stem.split("_")[0]: "asked for" for nb in chosen}
    declared, checked = provenance.notebooks(), {}

    def check(artifact: str):
        if artifact in checked or not provenance.applies(p, artifact):
            return
        checked[artifact] = None
        maker = provenance.producer(artifact).number
        for up in provenance.upstream(p, artifact):
            check(up)
        if maker in why or maker not in by_number:
            return
        rerun = [u for u in provenance.upstream(p, artifact) if provenance.producer(u).number in why]
        state, reason = provenance.status(p, artifact)
        if state != "current":
            why[maker] = f"{artifact} is {state}: {reason}"
        elif rerun:
            why[maker] = (f"{artifact} is made from {rerun[0]}, which {provenance.producer(rerun[0]).notebook} "
                          "makes first (reused if that is unchanged)")

    for number in sorted(why):
        for artifact in declared[number].reads if number in declared else ():
            check(artifact)
    return [(by_number[n], why[n]) for n in sorted(why)]


def _makes(nb: Path) -> tuple:
    """The artifacts a notebook makes (none for one that is not a step)."""
    declared = provenance.notebooks().get(nb.stem.split("_")[0])
    return declared.makes if declared else ()


def _uses(nb: Path) -> tuple:
    """The artifacts a notebook makes, or else those it reads (07 makes none)."""
    declared = provenance.notebooks().get(nb.stem.split("_")[0])
    return (declared.makes or declared.reads) if declared else ()


def _step_lock(p, nb: Path, wait: bool, say) -> Lock:
    number = nb.stem.split("_")[0]
    return Lock(p.data_path / ".locks" / f"step-{number}.lock", f"step {nb.stem} of {p.data_path}", wait, say)


NOTEBOOK_ENV = "HELPERS_NOTEBOOK"
"""The notebook a kernel runs, for its records (:data:`helpers.pipeline.settings.TRACE_ENV`)."""


def notebook_parameters(nb: Path, profile: str, parameters: dict) -> dict:
    """What the runner hands notebook ``nb``: ``profile``, every setting in ``settings`` (the notebook's
    :func:`helpers.pipeline.settings.given` reads it), and the parameters its cell lists by name."""
    import papermill as pm

    cell = set(pm.inspect_notebook(str(nb)))
    return {"profile": profile, "settings": {k: v for k, v in parameters.items() if k in SETTINGS},
            **{k: v for k, v in parameters.items() if k in cell}}


@contextmanager
def _notebook_named():
    try:
        yield
    finally:
        os.environ.pop(NOTEBOOK_ENV, None)


def run(profile: str = "quick", only=None, parameters: dict | None = None, folder=NOTEBOOKS,
        log_output: bool = False, wait: bool = True, restart: bool = False, say=None,
        dry_run: bool = False) -> list[Path]:
    """Execute the planned notebooks with papermill; returns the executed copies.

    Before any kernel starts: the settings are validated, the plan is made, what the planned steps need is
    fetched (weights into their caches) or refused with the fix (a package, Broden), and a run whose
    artifacts would not fit the free disk is refused with the numbers. ``dry_run``: the same checks, then
    the plan with each step's disk, memory and time (:func:`helpers.estimate.dry_run`); nothing is fetched,
    run or written, and ``[]`` is returned.

    Raises
    ------
    ValueError, FileNotFoundError
        For invalid settings, a missing split or dataset, a model that cannot take the images, a step that
        does not apply (08 without concepts) unless ``only`` leaves it out, a missing component, or a full
        disk: before any kernel starts.
    RuntimeError
        When a notebook fails or its kernel dies, naming the executed copy
        (with the traceback) and, for a dead kernel, the likely cause.
    """
    import papermill as pm

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    parameters = {k: v for k, v in (parameters or {}).items() if k != "profile"}
    p = load_profile(profile, **{k: v for k, v in parameters.items() if k in SETTINGS})
    available = find_notebooks(None, folder)
    chosen = find_notebooks(only, folder)
    known = set(SETTINGS) | {name for nb in chosen for name in pm.inspect_notebook(str(nb))}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ValueError(f"-p {unknown}: not a setting nor a parameter of these notebooks; the settings are "
                         f"{sorted(SETTINGS)}.")
    preflight(p)
    skipped = [nb for nb in chosen if not provenance.notebook_applies(p, nb.stem.split("_")[0])]
    refusals = []
    if skipped and spec(p.model).text:  # nothing to give: the step is not for this kind of network
        say(f"{', '.join(nb.stem for nb in skipped)} skipped: {provenance.why_not(p, _uses(skipped[0])[0])}.")
        chosen, skipped = [nb for nb in chosen if nb not in skipped], []
    if skipped:
        rest = " ".join(nb.stem.split("_")[0] for nb in chosen if nb not in skipped)
        refusals.append(f"{provenance.why_not(p, _uses(skipped[0])[0])}"
                        + (f"; or leave {skipped[0].stem} out: --only {rest}" if rest else "") + ".")
        if not dry_run:
            raise ValueError(refusals[0])
        chosen = [nb for nb in chosen if nb not in skipped]
    steps = plan(p, chosen, available) if only else [(nb, "asked for") for nb in chosen]
    extra = [(nb, why) for nb, why in steps if why != "asked for"]
    say(f"plan ({p.name}, {p.data_path}): {', '.join(nb.stem for nb, _ in steps)}")
    for nb, why in extra:
        say(f"  {nb.stem} runs first: {why}")
    numbers = [nb.stem.split("_")[0] for nb, _ in steps]
    missing = provenance.needs(p, numbers)
    if dry_run:
        problem = estimate.dry_run(p, steps, missing, say)
        refused = refusals + [m.line() for m in missing if m.fetch is None] + ([problem] if problem else [])
        if refused:
            raise ValueError("a run would be refused:\n" + "\n".join(refused))
        say("a run would start: nothing above stops it.")
        return []
    provide(missing, say)
    estimate.check_disk(p, numbers)
    out_dir = p.data_path / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    with kernel_environment(wait, restart), _notebook_named():
        for nb, _ in tqdm(steps, desc=f"notebooks ({profile})", unit="nb"):
            out = out_dir / nb.name
            try:
                with _step_lock(p, nb, wait, say):
                    oom = _oom_kills()
                    os.environ[NOTEBOOK_ENV] = nb.stem
                    try:
                        pm.execute_notebook(str(nb), str(out), parameters=notebook_parameters(nb, profile, parameters),
                                            cwd=str(nb.parent),
                                            progress_bar=False, log_output=log_output, extra_arguments=QUIET)
                    except pm.PapermillExecutionError as e:
                        raise RuntimeError(f"notebook {nb.stem} failed ({e.ename}: {e.evalue}); the traceback "
                                           f"is in {out}") from None
                    except Exception as e:  # the kernel died or could not start
                        raise RuntimeError(
                            f"notebook {nb.stem}: its kernel died ({type(e).__name__}: {e}); the executed copy, "
                            f"with the output up to that point, is {out}; {diagnose(p.data_path, oom)}.") from None
            except LockedError as e:
                raise RuntimeError(f"notebook {nb.stem} not started: {e}") from None
            done.append(out)
    say(f"done: figures and tables in {p.figures_path}, artifacts in {p.data_path}, executed notebooks in {out_dir}")
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help=f"one of {sorted(PROFILES)} (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names, e.g. 01 02")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="notebook parameter, repeatable (e.g. -p seed=1)")
    parser.add_argument("--no-wait", action="store_true",
                        help="fail instead of waiting when another run is writing the same artifact")
    parser.add_argument("--restart", action="store_true",
                        help="discard unfinished (.partial) work of the steps that run, instead of resuming it")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="check everything, then print the plan with each step's disk, memory and time "
                             "(a few seconds' calibration on the device); run nothing")
    args = parser.parse_args(argv)
    return exit_code(lambda: run(args.profile, args.only, parse_parameters(args.parameter), wait=not args.no_wait,
                                 restart=args.restart, dry_run=args.dry_run))


def exit_code(call) -> int:
    """0 once ``call()`` returns; 1 after printing, as one line, an error a user can act on (a bad setting, missing
    data, a failed notebook)."""
    try:
        call()
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
