"""The loss-curve picture: a falling loss is drawn as a line that falls from left to right, on a
log scale, and written as a PNG that image readers accept."""

from __future__ import annotations

import numpy as np

from neural_field_addon.core.io.images import write_png
from neural_field_addon.core.io.plot import BACKGROUND, COLOURS, loss_curve


def _curve_rows(image, colour):
    mask = np.all(image == np.asarray(colour, np.uint8), axis=-1)
    columns = np.nonzero(mask.any(axis=0))[0]
    return columns, [np.nonzero(mask[:, c])[0].mean() for c in columns]


def test_a_falling_loss_is_a_line_that_falls_across_the_picture():
    steps = 1000
    image = loss_curve([[(s, 0.5 * 10 ** (-3 * s / steps)) for s in range(0, steps + 1, 25)]], steps)
    columns, rows = _curve_rows(image, COLOURS[0])
    assert columns[0] < 10 and columns[-1] > image.shape[1] - 12  # spans the steps
    assert rows[0] < 25 and rows[-1] > image.shape[0] - 25  # from near the top to near the bottom
    assert np.all(np.diff(rows) >= -1.0)  # never rises (log scale keeps it straight)
    middle = len(rows) // 2
    assert abs(rows[middle] - (rows[0] + rows[-1]) / 2) < 6  # exponential decay is a straight line


def test_each_task_gets_its_own_colour_and_an_empty_history_is_blank():
    image = loss_curve([[(0, 1.0), (10, 0.1)], [(0, 0.5), (10, 0.05)]], 10)
    assert _curve_rows(image, COLOURS[0])[0].size and _curve_rows(image, COLOURS[1])[0].size
    blank = loss_curve([], 10)
    assert np.all(blank == np.asarray(BACKGROUND, np.uint8))


def test_png_round_trips_through_an_image_reader(tmp_path):
    from skimage.io import imread

    image = loss_curve([[(0, 1.0), (5, 0.3), (10, 0.01)]], 10, width=64, height=32)
    path = str(tmp_path / "curve.png")
    write_png(path, image)
    assert np.array_equal(imread(path)[..., :3], image)
