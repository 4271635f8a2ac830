"""Small pictures without a plotting library: a loss curve as an image (NumPy only; io/images.py writes it as a PNG), so the
add-on can show training progress as an image in Blender without importing torch or matplotlib."""

from __future__ import annotations

import numpy as np

BACKGROUND = (40, 40, 40)
GRID = (70, 70, 70)
DECADE = (95, 95, 95)
# One colour per task (cycled): Blender's theme-like orange, blue, green, pink, yellow.
COLOURS = ((237, 140, 50), (86, 160, 230), (120, 200, 100), (220, 100, 160), (230, 210, 90))


def _draw_line(image: np.ndarray, x0, y0, x1, y1, colour, thickness: int = 2) -> None:
    count = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.round(np.linspace(x0, x1, count)).astype(int)
    ys = np.round(np.linspace(y0, y1, count)).astype(int)
    height, width, _ = image.shape
    for dy in range(thickness):
        for dx in range(thickness):
            x, y = np.clip(xs + dx, 0, width - 1), np.clip(ys + dy, 0, height - 1)
            image[y, x] = colour


def loss_curve(curves, total_steps: int, width: int = 320, height: int = 160) -> np.ndarray:
    """An (height, width, 3) picture of training losses on a log scale: one line per curve, each
    a sequence of (step, loss); x runs from step 0 to `total_steps`. Horizontal lines mark powers
    of ten (brighter) and their halves in log space."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    values = [loss for curve in curves for _, loss in curve if np.isfinite(loss) and loss > 0]
    if not values:
        return image
    low, high = np.log10(min(values)), np.log10(max(values))
    low, high = np.floor(low * 2) / 2, np.ceil(high * 2) / 2
    if high - low < 0.5:
        high = low + 0.5
    margin = 4

    def to_pixel(step, loss):
        x = margin + (width - 2 * margin - 2) * step / max(1, total_steps)
        y = margin + (height - 2 * margin - 2) * (high - np.log10(loss)) / (high - low)
        return x, y

    for level in np.arange(low, high + 1e-9, 0.5):
        y = int(round(to_pixel(0, 10**level)[1]))
        image[y, margin:width - margin] = DECADE if abs(level - round(level)) < 1e-9 else GRID
    for index, curve in enumerate(curves):
        points = [to_pixel(step, loss) for step, loss in curve if np.isfinite(loss) and loss > 0]
        colour = COLOURS[index % len(COLOURS)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            _draw_line(image, x0, y0, x1, y1, colour)
        if len(points) == 1:
            _draw_line(image, *points[0], *points[0], colour, thickness=3)
    return image
