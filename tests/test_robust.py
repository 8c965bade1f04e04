"""Bounded influence (cloud_hub/poisoning/robust.py): the trimmed mean, the median, and the
bound on what k colluding devices can do to them, held against adversarial colluders."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cloud_hub.poisoning.robust import (
    influence_bound,
    influence_range,
    median_trim,
    trimmed_mean,
)
from escalade.poisoning_bench.influence import extreme_points, search

FINITE = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
# Colluders may send anything finite, far outside the honest range included.
WILD = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(honest points, colluder points) with k <= the median's trim of all h + k points."""
    h = draw(st.integers(3, 25))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(0, median_trim(2 * h) // 2))
    honest = draw(arrays(np.float64, (h, d), elements=FINITE))
    colluders = draw(arrays(np.float64, (k, d), elements=WILD))
    return honest, colluders


def test_trimming_drops_the_extremes_of_each_coordinate() -> None:
    """Each coordinate is sorted on its own: trimming 1 drops its own lowest and highest."""
    points = np.array([[0.0, 10.0], [1.0, -5.0], [2.0, 7.0], [100.0, 8.0], [3.0, 9.0]])
    assert trimmed_mean(points, 1).tolist() == [2.0, 8.0]
    assert trimmed_mean(points, 0).tolist() == pytest.approx(points.mean(axis=0).tolist())


def test_impossible_trims_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot trim"):
        trimmed_mean(np.zeros((4, 2)), 2)
    with pytest.raises(ValueError, match="cannot trim"):
        trimmed_mean(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="cannot trim"):
        trimmed_mean(np.zeros((3, 2)), -1)


@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)), elements=FINITE))
def test_the_default_trim_is_the_median(points: np.ndarray) -> None:
    np.testing.assert_allclose(trimmed_mean(points), np.median(points, axis=0), atol=1e-9)


@settings(max_examples=200)
@given(fleets())
def test_no_colluders_move_the_median_past_the_bound(
    fleet: tuple[np.ndarray, np.ndarray],
) -> None:
    """Whatever k <= t colluders send, each coordinate stays in `influence_range` and the
    shift stays within `influence_bound`."""
    honest, colluders = fleet
    k = len(colluders)
    aggregate = trimmed_mean(np.concatenate([honest, colluders]))
    low, high = influence_range(honest, k)
    assert np.all(aggregate >= low - 1e-9)
    assert np.all(aggregate <= high + 1e-9)
    shift = float(np.linalg.norm(aggregate - trimmed_mean(honest)))
    assert shift <= influence_bound(honest, k) + 1e-9


@settings(max_examples=100)
@given(fleets())
def test_the_optimal_colluders_attain_the_bound(fleet: tuple[np.ndarray, np.ndarray]) -> None:
    """The bound is tight: colluders beyond the honest range, on the better side of each
    coordinate, reach it (so it is the largest shift, not a loose estimate)."""
    honest, colluders = fleet
    k = len(colluders)
    attack = extreme_points(honest, k)
    shift = float(
        np.linalg.norm(trimmed_mean(np.concatenate([honest, attack])) - np.median(honest, axis=0))
    )
    assert shift == pytest.approx(influence_bound(honest, k), abs=1e-9)


def test_a_black_box_search_finds_nothing_past_the_bound() -> None:
    """An optimiser that does not know the trimmed mean's structure never beats the bound."""
    rng = np.random.default_rng(3)
    honest = rng.standard_normal((40, 5))
    for k in (1, 5, 12):
        assert search(honest, k, rng) <= influence_bound(honest, k) + 1e-9


def test_colluders_who_outnumber_the_trim_are_unbounded() -> None:
    honest = np.arange(10.0).reshape(5, 2)
    assert math.isinf(influence_bound(honest, 5))  # t = (10 - 1) // 2 = 4 < 5
    assert math.isfinite(influence_bound(honest, 4))
    # ... and they really can move it as far as they like.
    far = trimmed_mean(np.concatenate([honest, np.full((5, 2), 1e9)]))
    assert far.min() > 1e8


def test_an_explicit_trim_bounds_a_trimmed_mean_too() -> None:
    """trim = 3 of 20 + 3 points: 3 colluders at most; a 4th makes it unbounded."""
    rng = np.random.default_rng(0)
    honest = rng.standard_normal((20, 3))
    bound = influence_bound(honest, 3, trim=3)
    for _ in range(50):
        colluders = rng.standard_normal((3, 3)) * 1e6
        aggregate = trimmed_mean(np.concatenate([honest, colluders]), 3)
        assert np.linalg.norm(aggregate - trimmed_mean(honest, 3)) <= bound + 1e-9
    assert math.isinf(influence_bound(honest, 4, trim=3))
