"""A language model's grids: token contexts as a figure and as an HTML table."""
import numpy as np

from helpers.grids import text

CONTEXTS = {(0, 3): ("if a <b> then\n", "c"), (1, 5): ("", "x"), (2, 1): ("tab\there ", "&")}


class Contexts:
    kind = "text"

    def context(self, i, t, before=text.BEFORE):
        return CONTEXTS[(int(i), int(t))]


def locs():
    """2 targets (columns) x 3 neighbours (rows) of (sequence, position, 0)."""
    cells = [[(0, 3, 0), (1, 5, 0), (2, 1, 0)], [(2, 1, 0), (0, 3, 0), (1, 5, 0)]]
    return np.asarray(cells, np.int64)


def test_the_figure_has_a_cell_per_neighbour_and_target_each_with_its_token_highlighted():
    image = text.text_grid(Contexts(), locs())
    w, h = text.CELL
    assert image.shape == (3 * (h + 2) - 2, 2 * (w + 2) - 2, 3) and image.dtype == np.uint8
    for col in range(2):
        for row in range(3):
            cell = image[row * (h + 2):row * (h + 2) + h, col * (w + 2):col * (w + 2) + w]
            right = cell[:, -12:].reshape(-1, 3)
            assert (right == text.HIGHLIGHT).all(axis=1).any()  # the token sits at the right, highlighted
            assert (cell.reshape(-1, 3) < 100).all(axis=1).any()  # and is written (dark pixels)
    first = image[:h, :w].reshape(-1, 3)
    assert ((first > 90) & (first < 130)).all(axis=1).any()  # the grey context before it


def test_the_table_escapes_the_text_and_shows_whitespace():
    page = text.text_grid_html(Contexts(), locs(), "blocks.0.mlp.fc PC 1", t=np.array([-1.5, 2.0]))
    assert page.count("<tr>") == 4 and page.count("<mark>") == 6
    assert "if a &lt;b&gt; then¶</span><mark>c</mark>" in page and "<mark>&amp;</mark>" in page
    assert "tab here " in page and "t = -1.5" in page and "<title>blocks.0.mlp.fc PC 1</title>" in page
