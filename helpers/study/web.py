"""The user study as a static jsPsych experiment, for participants anywhere (``make study-web``).

    python -m helpers.study.web --profile quick                 # data/quick/<model>/study_web/<stimuli id>/
    python -m helpers.study.web --completion-code C1A2B3 --attention-checks 2

writes a self-contained folder from 06's stimuli: ``index.html``, the stimulus
images, the trial settings (``study.js``), the experiment (``experiment.js``,
``trials.js``, ``study.css``) and jsPsych with its plugins under ``lib/``.
jsPsych comes from the npm registry at the versions pinned in
``helpers/study/jspsych/package-lock.json``, installed once with ``npm ci``
into a cache folder; the built folder makes no request outside itself, so it
runs from ``file://`` and from any static host (JATOS, Pavlovia, a university
web space, GitHub Pages). ``build.json`` records the stimuli hash, the
settings, npm's and every package's version, and each file's SHA-256.

Participants get the Voila app's trial list (``trials.js`` reproduces
:func:`helpers.study.stimuli.trial_list` exactly), the paper's instruction,
↑ / ↓ keys or two buttons, no feedback, and the ``min_rt_ms`` rule. Answers go
to ``localStorage`` as they are given (a reload resumes), to the host when
there is one (JATOS, detected by its ``/publix/`` paths, or ``--data-url``),
and the end page offers them as a CSV file. 07 reads that file, jsPsych's and
JATOS' exports from ``responses/<stimuli id>/web/`` (docs/study-online.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..pipeline import provenance
from ..pipeline.settings import SETTINGS, load_profile
from .app import INSTRUCTION
from .stimuli import load_stimuli

SOURCE = Path(__file__).with_name("jspsych")
"""The experiment's own files, its default consent text, and npm's package.json / package-lock.json."""


OWN = ("index.html", "experiment.js", "trials.js", "study.css")


LIBRARIES = {
    "lib/jspsych.js": ("jspsych", "dist/index.browser.min.js"),
    "lib/jspsych.css": ("jspsych", "css/jspsych.css"),
    "lib/plugin-html-button-response.js": ("@jspsych/plugin-html-button-response", "dist/index.browser.min.js"),
    "lib/plugin-survey-text.js": ("@jspsych/plugin-survey-text", "dist/index.browser.min.js"),
}
"""Files of the built folder's ``lib/``: (npm package, path in it)."""


PROLIFIC = "https://app.prolific.com/submissions/complete?cc={code}"
"""Where a participant returns when the study is done and a completion code is configured."""


SECONDS_PER_TRIAL = 4.0
"""Time a participant spends on one pair, for the consent page's estimate: an assumed human pace
(about 3 s to look and decide) plus the page's own time per trial, which the browser test measures
in milliseconds (docs/study-online.md)."""


COMPLETION = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuron-explanations"


def _lock_digest() -> str:
    data = b"".join((SOURCE / name).read_bytes() for name in ("package.json", "package-lock.json"))
    return hashlib.sha256(data).hexdigest()[:12]


def pinned() -> dict[str, str]:
    """The npm packages of the experiment and their versions, from ``package-lock.json``."""
    lock = json.loads((SOURCE / "package-lock.json").read_text())
    wanted = lock["packages"][""]["dependencies"]
    return {name: lock["packages"][f"node_modules/{name}"]["version"] for name in wanted}


def node_modules(cache=None) -> Path:
    """jsPsych and its plugins at the pinned versions: ``npm ci`` once into ``cache``.

    Parameters
    ----------
    cache : path, optional
        Folder of the installs, one per lock file (default: ``$HELPERS_NPM_DIR``,
        else ``~/.cache/neuron-explanations``). Offline, a folder filled by an
        earlier install is enough.

    Returns
    -------
    Path
        The ``node_modules`` folder.
    """
    root = Path(cache or os.environ.get("HELPERS_NPM_DIR") or _cache()) / f"jspsych-{_lock_digest()}"
    done = root / "node_modules" / ".installed.json"
    if done.exists():
        return root / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm was not found: the web study installs jsPsych with it. Install Node.js "
                           "(`apt-get install npm`, or https://nodejs.org), or pass --packages with a folder "
                           "where `npm ci` of helpers/study/jspsych/package-lock.json has run.")
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(SOURCE / name, partial / name)
    run = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                         cwd=partial, capture_output=True, text=True)
    if run.returncode:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"`npm ci` could not install {pinned()} from the npm registry:\n"
                           f"{(run.stderr or run.stdout)[-1500:]}\nRun it once where the registry is "
                           f"reachable (the install is kept in {root.parent}), or pass --packages.")
    version = subprocess.run([npm, "--version"], capture_output=True, text=True).stdout.strip()
    (partial / "node_modules" / ".installed.json").write_text(json.dumps({"npm": version, "packages": pinned()}))
    try:
        partial.rename(root)
    except OSError:  # another process installed it first
        shutil.rmtree(partial, ignore_errors=True)
    return root / "node_modules"


def _installed(modules: Path) -> dict[str, str]:
    """Versions found in ``modules``; they must be the pinned ones."""
    found = {}
    for name, version in pinned().items():
        manifest = modules / name / "package.json"
        found[name] = json.loads(manifest.read_text())["version"] if manifest.exists() else None
        if found[name] != version:
            raise RuntimeError(f"{modules} holds {name} {found[name]}, not the pinned {version}: delete "
                               f"{modules.parent} and build again.")
    return found


def _library(path: Path) -> bytes:
    """A jsPsych file without its source-map comment (which points at unpkg.com)."""
    text = path.read_bytes()
    return re.sub(rb"\n?/[/*][#@] sourceMappingURL=[^\n]*", b"", text)


def _masked(stimuli_hash: str, stimulus_id: str, ordered: str) -> int:
    """The answer key as the page holds it: which image is ordered, XOR one bit of a hash (not secret)."""
    bit = hashlib.sha256(f"{stimuli_hash}:{stimulus_id}".encode()).digest()[0] & 1
    return int(ordered == "a") ^ bit


def default_folder(p) -> Path:
    """``data/<profile>/<model>/study_web/<stimuli id>``: one folder per stimulus set."""
    return p.data_path / "study_web" / p.artifact("stimuli").name


def build(p, out=None, *, consent=None, attention_checks: int = 0, completion_code: str = "",
          completion_url: str = PROLIFIC, data_url: str = "", min_rt_ms: float = 200, packages=None) -> Path:
    """Write the static web study of profile ``p``'s stimuli.

    Parameters
    ----------
    p : Profile
        Its stimuli (06) must be current.
    out : path, optional
        The folder to write (replaced whole); default :func:`default_folder`.
    consent : path, optional
        HTML shown before the first trial (``{minutes}`` and ``{n_trials}`` are
        filled in); default ``helpers/study/jspsych/consent.html``.
    attention_checks : int
        Trials, spread evenly, that ask for a given key whatever the grids show.
    completion_code : str
        A Prolific completion code: the end page returns there (``completion_url``).
    data_url : str
        An endpoint that takes each answer as a POSTed JSON line (besides JATOS,
        which is detected).
    min_rt_ms : float
        Answers faster than this after a trial appears are ignored.
    packages : path, optional
        A ``node_modules`` folder of the pinned packages (default: :func:`node_modules`).

    Returns
    -------
    Path
        The folder.
    """
    state, why = provenance.status(p, "stimuli")
    if state != "current":
        raise FileNotFoundError(f"the study's stimuli are {state} for these settings ({why}): run "
                                f"{provenance.made_by(p, 'stimuli')} first.")
    folder = p.artifact("stimuli")
    stimuli, stimuli_hash = load_stimuli(folder)
    if not (isinstance(attention_checks, int) and 0 <= attention_checks <= len(stimuli)):
        raise ValueError(f"attention_checks={attention_checks!r}; use a whole number from 0 to the "
                         f"{len(stimuli)} trials.")
    if completion_code and not COMPLETION.fullmatch(completion_code):
        raise ValueError(f"completion_code={completion_code!r}; Prolific's codes are letters and digits.")
    if "{code}" not in completion_url:
        raise ValueError(f"completion_url={completion_url!r} lacks '{{code}}', where the completion code goes.")
    if data_url and not re.match(r"https?://", data_url):
        raise ValueError(f"data_url={data_url!r}; give the endpoint's http(s):// address, or leave it empty.")
    if min_rt_ms < 0:
        raise ValueError(f"min_rt_ms={min_rt_ms!r}; use a duration in milliseconds, 0 or more.")
    modules = Path(packages) if packages else node_modules()
    versions = _installed(modules)
    consent_path = Path(consent) if consent else SOURCE / "consent.html"
    if not consent_path.is_file():
        raise FileNotFoundError(f"consent={consent_path} is not a file; give an HTML file of the consent text.")
    n = len(stimuli)
    minutes = max(1, round(n * SECONDS_PER_TRIAL / 60 + 1))
    consent_html = consent_path.read_text().replace("{minutes}", str(minutes)).replace("{n_trials}", str(n))
    out = Path(out) if out else default_folder(p)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    (partial / "lib").mkdir()
    rows = []
    for s in stimuli.itertuples():
        for image in (s.image_a, s.image_b):
            shutil.copy2(folder / image, partial / image)
        rows.append({"stimulus_id": s.stimulus_id, "layer": s.layer, "basis": s.basis,
                     "component": int(s.component), "image_a": s.image_a, "image_b": s.image_b,
                     "key": _masked(stimuli_hash, s.stimulus_id, s.ordered)})
    settings = {"seed": p.seed, "min_rt_ms": float(min_rt_ms), "attention_checks": attention_checks,
                "completion_code": completion_code, "completion_url": completion_url, "data_url": data_url}
    config = {"title": "Picture study", "instruction": INSTRUCTION, "consent": consent_html,
              "stimuli_hash": stimuli_hash, "stimuli": rows, "minutes": minutes, **settings}
    (partial / "study.js").write_text("window.STUDY = " + json.dumps(config, indent=1, ensure_ascii=False) + ";\n")
    for name in OWN:
        text = (SOURCE / name).read_text()
        (partial / name).write_text(text.replace("{title}", config["title"]) if name == "index.html" else text)
    for target, (package, path) in LIBRARIES.items():
        (partial / target).write_bytes(_library(modules / package / path))
    files = sorted(f.relative_to(partial).as_posix() for f in partial.rglob("*") if f.is_file())
    record = {"made_by": "python -m helpers.study.web", "profile": p.name,
              "stimuli": {"folder": str(folder), "hash": stimuli_hash, "n_stimuli": n},
              "settings": {**settings, "consent": str(consent_path)},
              "npm": json.loads((modules / ".installed.json").read_text()).get("npm")
              if (modules / ".installed.json").exists() else None,
              "packages": versions, "size_bytes": sum((partial / f).stat().st_size for f in files),
              "files": {f: hashlib.sha256((partial / f).read_bytes()).hexdigest() for f in files}}
    (partial / "build.json").write_text(json.dumps(record, indent=1) + "\n")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv=None) -> int:
    from ..pipeline.kernels import parse_parameters

    parser = argparse.ArgumentParser(prog="python -m helpers.study.web", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="a setting of the profile whose stimuli to use, repeatable (e.g. -p model=mini_resnet)")
    parser.add_argument("--out", help="folder to write (default data/<profile>/<model>/study_web/<stimuli id>)")
    parser.add_argument("--consent", help="HTML file shown before the first trial ({minutes}, {n_trials} filled in)")
    parser.add_argument("--attention-checks", type=int, default=0, metavar="N")
    parser.add_argument("--completion-code", default="", help="Prolific completion code (the end page returns there)")
    parser.add_argument("--completion-url", default=PROLIFIC)
    parser.add_argument("--data-url", default="", help="endpoint that takes each answer as a POSTed JSON line")
    parser.add_argument("--min-rt-ms", type=float, default=200)
    parser.add_argument("--packages", help="a node_modules folder of the pinned jsPsych packages (offline)")
    args = parser.parse_args(argv)
    try:
        parameters = parse_parameters(args.parameter)
        p = load_profile(args.profile, **{k: v for k, v in parameters.items() if k in SETTINGS})
        out = build(p, args.out, consent=args.consent, attention_checks=args.attention_checks,
                    completion_code=args.completion_code, completion_url=args.completion_url,
                    data_url=args.data_url, min_rt_ms=args.min_rt_ms, packages=args.packages)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    record = json.loads((out / "build.json").read_text())
    print(f"web study: {out}/index.html ({len(record['files'])} files, {record['size_bytes'] / 1e6:.1f} MB; "
          + ", ".join(f"{k} {v}" for k, v in record["packages"].items()) + ")")
    print(f"open it from file://, or host the folder; answers go to {p.artifact('responses') / 'web'}/ for 07 "
          "(docs/study-online.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
