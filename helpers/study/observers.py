"""A machine observer: answers each study trial from the two images alone.

Feature space (fixed): every patch of a grid is box-averaged to ``POOL x POOL``
pixels per channel, intensities scaled to [0, 1]; a column is described by the
mean of its ``k`` patch features (the rows are neighbours, unordered). The
*roughness* of a grid is the mean Euclidean distance between the descriptors
of adjacent columns. The observer picks the grid with the smaller roughness —
the one whose neighbouring columns are more alike — and "top" on a tie.

It sees only the two images and the grid layout a participant sees (``m``
columns, ``k`` rows, ``GAP`` pixels between thumbnails), never the answer key.
Its log has the human format with ``observer: "machine"`` and lives in
``responses/machine/``, apart from human logs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..pipeline import store
from .stimuli import GAP, ResponseLog, column_boxes, load_stimuli, response, trial_list

POOL = 4


NAME = "pixel-smoothness"


def column_features(image: np.ndarray, m: int, k: int, pool: int = POOL, gap: int = GAP) -> np.ndarray:
    """Descriptors of the ``m`` columns of a grid with ``k`` rows.

    ``image``: ndarray of shape (H, W) or (H, W, C), uint8.
    Returns ndarray of shape (m, pool * pool * C), float32.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    step = (image.shape[0] + gap) // k
    thumb = step - gap
    if k * step - gap != image.shape[0] or thumb < 1:
        raise ValueError(f"a grid {image.shape[0]} px high does not split into k={k} rows with gap={gap}.")
    out = []
    for box in column_boxes(image.shape[1], m, gap):
        patches = []
        for row in range(k):
            patch = image[row * step:row * step + thumb, box]
            small = [np.asarray(Image.fromarray(patch[..., c]).resize((pool, pool), Image.BOX), np.float32)
                     for c in range(patch.shape[2])]
            patches.append(np.stack(small, -1).ravel() / 255)
        out.append(np.mean(patches, axis=0))
    return np.asarray(out, np.float32)


def roughness(image: np.ndarray, m: int, k: int) -> float:
    """Mean distance between the descriptors of adjacent columns (lower: smoother)."""
    f = column_features(image, m, k)
    return float(np.linalg.norm(np.diff(f, axis=0), axis=1).mean())


def choose(top: np.ndarray, bottom: np.ndarray, m: int, k: int) -> str:
    """``"top"`` or ``"bottom"``: the grid whose adjacent columns are more alike."""
    return "bottom" if roughness(bottom, m, k) < roughness(top, m, k) else "top"


def run(profile, name: str = NAME, stimuli_key: dict | None = None) -> Path:
    """Answer every trial of the profile's stimuli; returns the log's path.

    The log ``responses/machine/<name>.jsonl`` is rewritten from scratch (it is
    computed, not collected), into a temporary file renamed into place.
    """
    p = profile
    folder = p.artifact("stimuli")
    stimuli, stimuli_hash = load_stimuli(folder, stimuli_key)
    trials = trial_list(stimuli, name, p.seed)
    path = p.artifact("responses") / "machine" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.atomic(path) as tmp:
        log = ResponseLog(tmp)
        for t in tqdm(trials, desc="machine observer", unit="trial"):
            start = time.perf_counter()
            top, bottom = (np.asarray(Image.open(folder / t[side])) for side in ("top", "bottom"))
            choice = choose(top, bottom, p.n_targets, p.n_neighbours)
            rt = 1000 * (time.perf_counter() - start)
            log.append(response(t, name, "machine", len(trials), choice, rt, "machine", stimuli_hash))
    return path
