"""Check every artifact of a profile: good, stale, corrupt or missing.

    python -m helpers.verify --profile quick [-p key=value ...]     # also: make verify

Every file is hashed and compared with its sidecar (a file changed after it
was made, even at the same size, is *corrupt*), and every artifact's key with
what the profile asks for now (made from other settings, images, model, code
or upstream artifacts: *stale*). Nothing is changed. Exit status 1 when an
artifact is stale or corrupt.
"""
from __future__ import annotations

import argparse
import sys

from . import steps as _steps  # noqa: F401  importing the catalogue registers every step's artifacts
from .pipeline import provenance
from .pipeline.settings import PROFILES, SETTINGS, load_profile

LABEL = {"current": "good", "stale": "stale", "corrupt": "corrupt", "missing": "missing"}


def report(p) -> list[tuple[str, str, str]]:
    """``(artifact, state, why)`` for every artifact of the profile; state: good, stale, corrupt, missing."""
    rows, known = [], {}
    for artifact in provenance.ARTIFACTS:  # upstream first
        if provenance.applies(p, artifact):
            state, why = provenance.status(p, artifact, full=True, known=known)
            known[artifact] = state
            rows.append((artifact, LABEL[state], why))
    return rows


def main(argv=None) -> int:
    from .run import parse_parameters

    parser = argparse.ArgumentParser(prog="python -m helpers.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help=f"one of {sorted(PROFILES)} (default: quick)")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="profile setting, repeatable, as for the runner (e.g. -p seed=1)")
    args = parser.parse_args(argv)
    try:
        settings = parse_parameters(args.parameter)
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"-p {unknown}: not a profile setting; settings are {sorted(SETTINGS)}.")
        p = load_profile(args.profile, **settings)
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
