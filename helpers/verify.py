"""Check every artifact of a profile: good, stale, corrupt or missing.

    python -m helpers.verify --profile quick [-p key=value ...]     # also: make verify
    python -m helpers.verify --profile quick --prune [--dry-run]    # also: make prune

Every file is hashed and compared with its sidecar (a file changed after it
was made, even at the same size, is *corrupt*), and every artifact's key with
what the profile asks for now (made from other settings, images, model, code
or upstream artifacts: *stale*). Nothing is changed. Exit status 1 when an
artifact is stale or corrupt.

``--prune`` removes, from the profile's data folder (every model), what no setting reads any more: an
artifact made by other code than this checkout's (any setting asking for it remakes it in place), one
made from an upstream artifact that is gone or itself unread (its settings' upstream was remade or removed),
folders of the layout without per-setting folders, unfinished work set aside (``.set-aside``), and
leftovers of interrupted replacements (``*.old``). It says what it removes and how much that frees;
``--dry-run`` only says so. Artifacts of other settings that are current stay: each is read by its own
settings (a demo, a control, an experiment).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import steps as _steps  # noqa: F401  importing the catalogue declares every step
from .pipeline import provenance
from .pipeline.settings import PROFILES, SETTINGS, load_profile

LABEL = {"current": "good", "stale": "stale", "corrupt": "corrupt", "missing": "missing"}


def report(p) -> list[tuple[str, str, str]]:
    """``(artifact, state, why)`` for every artifact of the profile; state: good, stale, corrupt, missing."""
    rows, known = [], {}
    for artifact in provenance.artifacts():  # upstream first
        if provenance.applies(p, artifact):
            state, why = provenance.status(p, artifact, full=True, known=known)
            known[artifact] = state
            rows.append((artifact, LABEL[state], why))
    return rows


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def unread(root) -> list[tuple[Path, str]]:
    """``(folder, why)`` of everything under a profile's data folder ``root`` that no setting reads.

    See the module's description; current artifacts of any settings are kept.
    """
    from .pipeline import keys, store

    root, out = Path(root), []
    for model in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) if root.exists() else []:
        kept: dict[str, set] = {}
        for artifact in provenance.artifacts():
            step, folder = provenance.producer(artifact), model / artifact
            kept[artifact] = set()
            if not folder.is_dir():
                continue
            if (folder / store.META).exists():
                out.append((folder, "the layout without per-setting folders"))
                continue
            code = keys.code_digest(provenance.code(step.module))
            for item in sorted(folder.iterdir()):
                if item.name == ".set-aside" or item.name.endswith(".old"):
                    out.append((item, "unfinished or replaced work set aside"))
                    continue
                if not (item / store.META).exists():
                    continue  # unfinished work (.partial), locks: a run may be using them
                try:
                    meta = store.read_json(item / store.META)
                except store.CorruptArtifactError:
                    out.append((item, "its sidecar is corrupt"))
                    continue
                gone = [up for up in step.reads if up in meta.get("inputs", {}) and (model / up).is_dir()
                        and meta["inputs"][up] not in kept.get(up, set())]
                if meta.get("code") != code:
                    out.append((item, "made by other code than this checkout's"))
                elif gone:
                    out.append((item, f"made from a {gone[0]} that is gone or that no setting reads"))
                else:
                    kept[artifact] |= {meta["hash"], *(f"sha256:{r['sha256']}" for r in meta.get("files", {}).values()
                                                      if isinstance(r, dict))}  # a model is named by its file
    return out


def prune(root, dry_run: bool = False, say=print) -> int:
    """Remove :func:`unread` folders under ``root`` (``dry_run``: list them only); returns the bytes freed."""
    found, total = unread(root), 0
    for folder, why in found:
        size = _size(folder)
        total += size
        say(f"  {'would remove' if dry_run else 'removed'} {folder} ({size / 2**20:,.1f} MiB): {why}")
        if not dry_run:
            shutil.rmtree(folder)
    say(f"{'would free' if dry_run else 'freed'} {total / 2**20:,.1f} MiB in {root}"
        + ("" if found else ": every artifact there is read by some setting"))
    return total


def main(argv=None) -> int:
    from .run import parse_parameters

    parser = argparse.ArgumentParser(prog="python -m helpers.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help=f"one of {sorted(PROFILES)} (default: quick)")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="profile setting, repeatable, as for the runner (e.g. -p seed=1)")
    parser.add_argument("--prune", action="store_true", help="remove what no setting reads (see above)")
    parser.add_argument("-n", "--dry-run", action="store_true", help="with --prune: say what it would remove")
    args = parser.parse_args(argv)
    try:
        settings = parse_parameters(args.parameter)
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"-p {unknown}: not a profile setting; settings are {sorted(SETTINGS)}.")
        p = load_profile(args.profile, **settings)
        if args.prune:
            prune(p.data_path.parent, args.dry_run)
            return 0
        rows = report(p)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"artifacts of profile {p.name} in {p.data_path}:")
    for artifact, state, why in rows:
        print(f"  {artifact:<13} {state:<8} {why}")
    return 1 if any(state in ("stale", "corrupt") for _, state, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
