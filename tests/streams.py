"""Seeded synthetic streams shared by the detector tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

Stream = Callable[[np.random.Generator, int], np.ndarray]


def stationary(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, n)


def abrupt_mean_shift(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate([rng.normal(0.0, 1.0, n // 2), rng.normal(0.8, 1.0, n - n // 2)])


def gradual_drift(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(np.linspace(0.0, 1.5, n), 1.0)


def variance_only(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate([rng.normal(0.0, 1.0, n // 2), rng.normal(0.0, 3.0, n - n // 2)])


def heavy_tails(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_t(1.5, n)


def integer_ties(rng: np.random.Generator, n: int) -> np.ndarray:
    first = rng.integers(0, 5, n // 2)
    second = rng.integers(1, 6, n - n // 2)
    return np.concatenate([first, second]).astype(np.float64)


STREAMS: dict[str, Stream] = {
    "stationary": stationary,
    "abrupt_mean_shift": abrupt_mean_shift,
    "gradual_drift": gradual_drift,
    "variance_only": variance_only,
    "heavy_tails": heavy_tails,
    "integer_ties": integer_ties,
}


def random_cuts(rng: np.random.Generator, n: int, max_cuts: int = 8) -> list[tuple[int, int]]:
    """Random batch boundaries covering ``[0, n)``, empty batches included."""
    k = int(rng.integers(0, max_cuts + 1))
    cuts = np.sort(rng.integers(0, n + 1, k))
    bounds = [0, *cuts.tolist(), n]
    return list(itertools.pairwise(bounds))
