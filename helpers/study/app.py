"""The participant-facing study app (ipywidgets + ipyevents), inline or served by Voila.

The participant enters a pseudonymous code; each trial then shows the paper's
instruction and two grids stacked, answered with ↑ / ↓ (keyboard, while the
pointer is over the trial) or with two buttons, a progress indicator and no
feedback. Every answer is appended to ``responses/human/<code>.jsonl`` and
fsynced before the next trial appears; entering the same code again resumes
at the first unanswered trial.

    python -m helpers.study.app --profile quick          # `make study`: http://localhost:8866

serves ``notebooks/study_app.ipynb`` with Voila (no code shown) after
injecting the parameters, like papermill does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..grids.visualize import grid_png
from ..pipeline import provenance
from ..pipeline.settings import ROOT, SETTINGS, load_profile
from .stimuli import ResponseLog, check_code, load_stimuli, response, resume_point, trial_list

INSTRUCTION = (
    "Which of these two visualizations displays a coherent transition from left to right? "
    "Respond using the up arrow (↑) to select the top visualization or the down arrow (↓) "
    "to select the bottom visualization. If you can't tell, make your best guess.")


KEYS = {"ArrowUp": "top", "ArrowDown": "bottom"}


WIDTH = 720
"""Pixels a grid is shown at (nearest-neighbour upscaling by a whole factor)."""


def _png(path, width: int = WIDTH) -> bytes:
    image = np.asarray(Image.open(path))
    return grid_png(image, scale=max(1, width // image.shape[1]))


class StudyApp:
    """One participant's session; ``widget`` is what is displayed.

    Parameters
    ----------
    stimuli_dir : path
        The stimuli artifact of 06_user_study.
    responses_dir : path
        Folder of the human logs (``<code>.jsonl`` each).
    seed : int
        Profile seed (with the code, it seeds the trial list).
    min_rt_ms : float
        Answers faster than this after a trial appears are ignored (a key
        pressed twice must not answer a trial the participant has not seen).
    """

    def __init__(self, stimuli_dir, responses_dir, seed: int = 0, min_rt_ms: float = 200):
        import ipywidgets as w
        from ipyevents import Event

        self.folder, self.responses_dir = Path(stimuli_dir), Path(responses_dir)
        self.stimuli, self.hash = load_stimuli(self.folder)
        self.seed, self.min_rt_ms = seed, min_rt_ms
        self.participant, self.trials, self.log, self.index, self.shown_at = None, [], None, None, None
        self.code = w.Text(placeholder="participant code", description="Code")
        self.start_button = w.Button(description="Start", button_style="primary")
        self.message = w.HTML()
        self.progress_text = w.HTML(layout=w.Layout(width="150px"))
        self.progress = w.IntProgress(min=0, value=0, layout=w.Layout(width="100%"))
        # both grids and the buttons in one screen, in Voila and in JupyterLab (whose toolbars take
        # part of the window): each grid is 30 % of its height, whatever its size; the buttons sit beside them
        fit = dict(height="30vh", width="auto", max_width="100%", object_fit="contain",
                   object_position="left")
        self.top, self.bottom = (w.Image(format="png", layout=w.Layout(**fit)) for _ in range(2))
        self.up = w.Button(description="↑ top", layout=w.Layout(width="140px"))
        self.down = w.Button(description="↓ bottom", layout=w.Layout(width="140px"))
        grids = w.VBox([w.HTML("<b>↑</b>"), self.top, w.HTML("<b>↓</b>"), self.bottom],
                       layout=w.Layout(flex="1 1 auto", min_width="0"))
        buttons = w.VBox([self.up, self.down], layout=w.Layout(justify_content="center", flex="0 0 auto"))
        self.trial_box = w.VBox(
            [w.HTML(f"<p style='font-size:1.05em;margin:0 0 4px'>{INSTRUCTION}</p>"),
             w.HBox([self.progress_text, self.progress]),
             w.HBox([grids, buttons], layout=w.Layout(align_items="center"))],
            layout=w.Layout(padding="4px"))
        self.trial_box.add_class("study-trial")
        self.entry_box = w.VBox([w.HTML(f"<p>{INSTRUCTION}</p><p>Enter the participant code you "
                                        "were given, then press Start.</p>"),
                                 w.HBox([self.code, self.start_button])])
        self.widget = w.VBox([self.entry_box, self.message])
        self.keys = Event(source=self.trial_box, watched_events=["keydown"])
        self.keys.on_dom_event(self._on_key)
        self.start_button.on_click(lambda _: self.start(self.code.value))
        self.up.on_click(lambda _: self.answer("top", "button"))
        self.down.on_click(lambda _: self.answer("bottom", "button"))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def start(self, code: str) -> None:
        """Open (or resume) the session of participant ``code``."""
        try:
            code = check_code(code)
            self.trials = trial_list(self.stimuli, code, self.seed)
            self.log = ResponseLog(self.responses_dir / f"{code}.jsonl")
            self.index = resume_point(self.log, self.trials, self.hash)
        except ValueError as e:  # includes a log made on other stimuli
            self.message.value = f"<b style='color:#b00'>{e}</b>"
            return
        self.participant = code
        self.message.value = ""
        self.progress.max = len(self.trials)
        self.widget.children = [self.trial_box, self.message]
        self._show()

    def _show(self) -> None:
        if self.index >= len(self.trials):
            self.shown_at = None
            self.widget.children = [self.message]
            self.message.value = (f"<h3>Thank you!</h3><p>All {len(self.trials)} trials are answered. "
                                  "You can close this page.</p>")
            return
        t = self.trials[self.index]
        self.top.value, self.bottom.value = _png(self.folder / t["top"]), _png(self.folder / t["bottom"])
        self.progress_text.value = f"<b>Trial {self.index + 1} of {len(self.trials)}</b>&nbsp;"
        self.progress.value = self.index
        self.shown_at = time.perf_counter()

    def _on_key(self, event: dict) -> None:
        if event.get("key") in KEYS and not event.get("repeat"):
            self.answer(KEYS[event["key"]], "key")

    def answer(self, choice: str, source: str = "button") -> None:
        """Record ``choice`` ("top"/"bottom") for the trial on screen, then show the next."""
        if self.shown_at is None:
            return
        rt = 1000 * (time.perf_counter() - self.shown_at)
        if rt < self.min_rt_ms:
            return
        record = response(self.trials[self.index], self.participant, "human", len(self.trials),
                          choice, rt, source, self.hash)
        self.shown_at = None
        self.log.append(record)  # durable before the next trial; refused if another window logged it
        self.index = resume_point(self.log, self.trials, self.hash)
        self._show()


def app(profile, min_rt_ms: float = 200) -> StudyApp:
    """The study app on a profile's stimuli, logging to ``responses/human/``."""
    return StudyApp(profile.artifact("stimuli"), profile.artifact("responses") / "human",
                    profile.seed, min_rt_ms)


def serve(profile: str = "quick", parameters: dict | None = None, port: int = 8866,
          notebook=ROOT / "notebooks" / "study_app.ipynb") -> list[str]:
    """Write the parameterised app notebook and return the Voila command that serves it."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    parameters = parameters or {}
    settings = {k: v for k, v in parameters.items() if k in SETTINGS}
    p = load_profile(profile, **settings)
    parameters = {"profile": profile, "settings": settings, **parameters}  # the cell's names also by name
    state, why = provenance.status(p, "stimuli")
    if state != "current":  # fail here, clearly, when 06 has not run for these settings
        raise FileNotFoundError(f"the study's stimuli are {state} for these settings ({why}): run "
                                f"{provenance.made_by(p, 'stimuli')} first.")
    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    out = p.data_path / "study_app.ipynb"
    nbformat.write(nb, out)
    return [sys.executable, "-m", "voila", str(out), f"--port={port}", "--no-browser",
            "--Voila.ip=127.0.0.1", "--theme=light"]


def main(argv=None) -> int:
    from ..pipeline.kernels import parse_parameters

    parser = argparse.ArgumentParser(prog="python -m helpers.study.app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--port", type=int, default=8866)
    parser.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE", default=[],
                        help="notebook parameter, repeatable (e.g. -p data_dir=/path)")
    args = parser.parse_args(argv)
    try:
        cmd = serve(args.profile, parse_parameters(args.parameter), args.port)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from ..pipeline.kernels import kernel_variables

    print(f"study app: http://localhost:{args.port}/ (Ctrl-C to stop)", flush=True)
    os.environ.update(kernel_variables())  # Voila's kernels import this checkout's helpers
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
