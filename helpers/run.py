"""Run the notebooks in order with papermill.

    python -m helpers.run --profile quick                 # every notebook
    python -m helpers.run --profile quick --only 01 02    # some of them
    python -m helpers.run --profile paper -p data_root=/data/imagenet -p batch_size=512

Executed copies go to ``data/<profile>/notebooks/``; when one fails, the
message names the executed copy that holds the traceback.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .config import PROFILES, ROOT, SETTINGS, load_profile

NOTEBOOKS = ROOT / "notebooks"


def parse_value(text: str):
    """A ``-p`` value as a Python literal when it is one (``3``, ``None``, ``[1, 2]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameters(pairs) -> dict:
    """``["seed=1", "layers=conv1,fc1"]`` -> ``{"seed": 1, "layers": "conv1,fc1"}``."""
    params = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p {pair!r} is not key=value; write e.g. -p seed=1.")
        params[key.strip()] = parse_value(value.strip())
    return params


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


def run(profile: str = "quick", only=None, parameters: dict | None = None,
        folder=NOTEBOOKS, log_output: bool = False) -> list[Path]:
    """Execute notebooks with papermill; returns the executed copies.

    Raises
    ------
    RuntimeError
        When a notebook fails, naming the executed copy with the traceback.
    """
    import papermill as pm

    parameters = {"profile": profile, **(parameters or {})}
    settings = {k: v for k, v in parameters.items() if k != "profile"}
    p = load_profile(profile, **{k: v for k, v in settings.items() if k in SETTINGS})
    notebooks = find_notebooks(only, folder)
    declared = {name for nb in notebooks for name in pm.inspect_notebook(str(nb))}
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(f"-p {unknown}: not a parameter of these notebooks; they take {sorted(declared)}.")
    out_dir = p.data_path / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in tqdm(notebooks, desc=f"notebooks ({profile})", unit="nb"):
        out = out_dir / nb.name
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(nb.parent),
                                progress_bar=False, log_output=log_output)
        except pm.PapermillExecutionError as e:
            raise RuntimeError(
                f"notebook {nb.stem} failed ({e.ename}: {e.evalue}); the traceback is in {out}"
            ) from None
        done.append(out)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help=f"one of {sorted(PROFILES)} (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names, e.g. 01 02")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="notebook parameter, repeatable (e.g. -p seed=1)")
    args = parser.parse_args(argv)
    try:
        outputs = run(args.profile, args.only, parse_parameters(args.parameter))
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for out in outputs:
        print(f"executed {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
