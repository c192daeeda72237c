"""A language model's grids: the nearest token contexts at each target point, as a figure and an HTML table.

The counterpart of :func:`helpers.grids.visualize.patch_grid` for text: a "patch" is a token seen with the
tokens before it (what a causal model had read when the activation was taken). Columns are the targets
along the basis vector, low to high; rows the nearest neighbours; each cell shows the context in grey and
the token itself highlighted, the context cut on the left to fit. The HTML table holds the same cells,
with up to ``before`` tokens of context each.
"""
from __future__ import annotations

import html

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BEFORE = 12
"""Tokens of context before the highlighted token."""


CELL = (220, 18)
"""Width and height of a cell of the figure, in pixels."""


HIGHLIGHT = (255, 221, 87)


def shown(text: str) -> str:
    """Whitespace made visible on one line: a newline as ``¶``, a tab as a space."""
    return text.replace("\r", "").replace("\n", "¶").replace("\t", " ")


def cells(dataset, locs, before: int = BEFORE) -> list[list[tuple[str, str]]]:
    """``[column][row] = (context, token)`` of ``locs`` (m, k, 3) holding ``(sequence, position, 0)``."""
    m, k, _ = locs.shape
    return [[dataset.context(int(locs[c, r, 0]), int(locs[c, r, 1]), before) for r in range(k)] for c in range(m)]


def _font(size: int = 11):
    """DejaVu Sans Mono, which matplotlib ships (every glyph of the shown text, ``¶`` included)."""
    from pathlib import Path

    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"), size)


def text_grid(dataset, locs, before: int = BEFORE, cell=CELL, gap: int = 2) -> np.ndarray:
    """The grid of token contexts as an RGB image: ``locs`` (m, k, 3) -> k rows, m columns.

    Returns ndarray of shape (k * (h + gap) - gap, m * (w + gap) - gap, 3), uint8, for ``cell = (w, h)``.
    """
    m, k, _ = locs.shape
    w, h = cell
    image = Image.new("RGB", (m * (w + gap) - gap, k * (h + gap) - gap), (255, 255, 255))
    draw, font = ImageDraw.Draw(image), _font()
    for c, column in enumerate(cells(dataset, locs, before)):
        for r, (context, token) in enumerate(column):
            left, top = c * (w + gap), r * (h + gap)
            draw.rectangle((left, top, left + w - 1, top + h - 1), fill=(245, 245, 245))
            token = shown(token) or " "
            tw = min(draw.textlength(token, font=font), w - 8)
            x_token = left + w - 3 - tw
            draw.rectangle((x_token - 1, top + 2, left + w - 2, top + h - 3), fill=HIGHLIGHT)
            draw.text((x_token, top + 3), token, fill=(0, 0, 0), font=font)
            context = shown(context)
            while context and draw.textlength(context, font=font) > x_token - left - 4:
                context = context[1:]
            draw.text((x_token - 2 - draw.textlength(context, font=font), top + 3), context, fill=(110, 110, 110),
                      font=font)
    return np.asarray(image)


def write_html(path, dataset, grid: dict):
    """Write the table of a grid (``locs``, ``label``, ``t`` of :meth:`Visualizer.plan`) to ``path``; returns it."""
    from ..pipeline import store

    with store.atomic(path) as tmp:
        tmp.write_text(text_grid_html(dataset, grid["locs"], grid["label"], grid["t"]))
    return path


def text_grid_html(dataset, locs, title: str = "", t=None, before: int = BEFORE) -> str:
    """The grid as a standalone HTML page: a table of k rows and m columns (target ``t`` in each header)."""
    columns = cells(dataset, locs, before)
    head = "".join(f"<th>{'' if t is None else f't = {float(v):.3g}'}</th>" for v in (t if t is not None else
                                                                                          [None] * len(columns)))
    rows = []
    for r in range(len(columns[0]) if columns else 0):
        tds = "".join(f"<td><span class=c>{html.escape(shown(ctx))}</span><mark>{html.escape(shown(tok))}</mark></td>"
                      for ctx, tok in (col[r] for col in columns))
        rows.append(f"<tr>{tds}</tr>")
    return ("<!doctype html><meta charset=utf-8><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 4px;"
            "font:12px monospace;text-align:right;white-space:pre}.c{color:#777}mark{background:#ffdd57}</style>"
            f"<h3>{html.escape(title)}</h3><table><tr>{head}</tr>{''.join(rows)}</table>\n")
