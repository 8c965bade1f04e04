"""Structural similarity (Wang et al. 2004) of image batches, with a uniform window.

The images here are tiny (8x8 digits), so the window is 3 pixels there and 7 (the usual) from
16 pixels up, over every window that fits (no padding); constants as in the paper (K1 = 0.01,
K2 = 0.03 of the data range).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def ssim(a: NDArray[np.floating], b: NDArray[np.floating], side: int, data_range: float) -> F64:
    """Mean SSIM of each pair of flattened square images (rows of `a` and `b`)."""
    x = np.asarray(a, np.float64).reshape(-1, side, side)
    y = np.asarray(b, np.float64).reshape(-1, side, side)
    window = 3 if side < 16 else 7

    def mean(v: F64) -> F64:
        views = sliding_window_view(v, (window, window), axis=(1, 2))
        return np.asarray(views.mean(axis=(-1, -2)), np.float64)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return np.asarray(s.reshape(len(s), -1).mean(axis=1), np.float64)
