"""The one protocol every drift detector follows, its result type, and input checks.

A detector watches ``n_series`` independent series (one per column of a batch).
``update(X)`` takes a whole batch of shape ``(n_events, n_series)`` and returns a
:class:`DriftResult`; state lives in numpy arrays so that it can be exported with
``export_state()`` and rebuilt with ``from_state()`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
State = dict[str, Any]

STATE_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class DriftResult:
    """What one ``update`` saw, per series.

    Attributes
    ----------
    detections
        One int64 array per series: the row indices of the batch at which drift was signalled.
    score
        The detector's statistic at the most recent check (NaN before the first check).
    p_value
        The p-value at the most recent check; NaN where the detector has none. Detectors
        whose p-values are costly (KS in its exact regime) compute them only when this
        attribute is first read: decisions never need them.
    threshold
        The value ``score`` is compared with (for p-value tests, the critical statistic).
    window_size, reference_size
        Number of values in the current window and in the reference.
    n_missing
        NaN values skipped in this batch.
    drifting
        Whether the most recent check signalled drift.
    detection_scores
        One float array per series, parallel to ``detections``: the score at each detecting
        check (the statistic that crossed the threshold, not the batch's last).
    detection_p_values
        Parallel to ``detections``: the p-value at each detecting check (NaN where the
        detector has none), computed when first read.
    detection_windows
        Parallel to ``detections``: the window size at each detecting check (for ADWIN the
        width left after the cut: the values it places after the change).

    Everything about a detection is the detecting check's, so it is the same however the
    stream is cut into batches.
    """

    detections: tuple[IntArray, ...]
    score: FloatArray
    p_value_source: FloatArray | Callable[[], FloatArray]
    threshold: FloatArray
    window_size: IntArray
    reference_size: IntArray
    n_missing: IntArray
    drifting: BoolArray
    extra: dict[str, FloatArray] = field(default_factory=dict)
    detection_scores: tuple[FloatArray, ...] = ()
    detection_p_value_source: (
        tuple[FloatArray, ...] | Callable[[], tuple[FloatArray, ...]] | None
    ) = None
    detection_windows: tuple[IntArray, ...] = ()

    @cached_property
    def p_value(self) -> FloatArray:
        src = self.p_value_source
        return src() if callable(src) else src

    @cached_property
    def detection_p_values(self) -> tuple[FloatArray, ...]:
        src = self.detection_p_value_source
        if src is None:
            return tuple(np.full(len(d), np.nan) for d in self.detections)
        return src() if callable(src) else src

    @property
    def statistic(self) -> FloatArray:
        """Alias of ``score`` (the name used for test statistics such as KS's D)."""
        return self.score

    @property
    def n_series(self) -> int:
        return len(self.detections)


@runtime_checkable
class Detector(Protocol):
    """The seam between the daemon and any drift kernel."""

    @property
    def n_series(self) -> int: ...

    def update(self, X: npt.ArrayLike) -> DriftResult: ...

    def reset(self, series: int | Sequence[int] | None = None) -> None: ...

    def export_state(self, *, include_reference: bool = True) -> State:
        """Plain arrays and numbers. ``include_reference=False`` leaves out what can be
        rebuilt from the reference the detector was made from (pass it to ``from_state``)."""

    @classmethod
    def from_state(cls, state: State, reference: npt.ArrayLike | None = None) -> Self: ...


def as_batch(X: npt.ArrayLike, n_series: int | None = None, name: str = "X") -> FloatArray:
    """Return ``X`` as a C-contiguous float64 matrix ``(n_events, n_series)``.

    A 1-D input is one series. Non-numeric input raises ``ValueError``; NaN is allowed
    (it means *missing*), infinities are not.

    >>> as_batch([1, 2, 3]).shape
    (3, 1)
    >>> as_batch([["a"]])
    Traceback (most recent call last):
    ...
    ValueError: X must be numeric, got dtype <U1
    """
    arr = np.asarray(X)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_events, n_series), got {arr.ndim}-D")
    if n_series is not None and arr.shape[1] != n_series:
        raise ValueError(f"{name} has {arr.shape[1]} series (columns), expected {n_series}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if np.isinf(out).any():
        raise ValueError(f"{name} contains infinite values; use NaN for missing values")
    return out


def series_indices(series: int | Sequence[int] | None, n_series: int) -> IntArray:
    """Normalise a ``reset`` target to an array of column indices (None means all)."""
    if series is None:
        return np.arange(n_series, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(series, dtype=np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= n_series):
        raise ValueError(f"series must be in [0, {n_series}), got {series!r}")
    return idx


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def rows_where(rows: IntArray, mask: BoolArray) -> tuple[IntArray, ...]:
    """Per series (row of ``rows``), the entries where ``mask`` holds, as int64 arrays."""
    return values_where(rows.astype(np.int64, copy=False), mask)


def values_where(values: npt.NDArray[Any], mask: BoolArray) -> tuple[npt.NDArray[Any], ...]:
    """Per series (row of ``values``), the entries where ``mask`` holds."""
    counts = mask.sum(axis=1)
    return tuple(np.split(values[mask], np.cumsum(counts)[:-1]))


def state_header(kind: str, params: dict[str, Any]) -> State:
    """The common head of every exported state: kind, format version, parameters."""
    return {"kind": kind, "version": STATE_VERSION, "params": dict(params)}


def blank(cls: type[T], params: dict[str, Any]) -> T:
    """An instance of ``cls`` made without ``__init__`` (whose work the state being restored
    replaces), carrying the already validated parameters as attributes."""
    det = cls.__new__(cls)
    for name, value in params.items():
        setattr(det, name, value)
    return det


def check_state(state: State, kind: str) -> dict[str, Any]:
    """Validate the head of an exported state and return its parameters."""
    if state.get("kind") != kind:
        raise ValueError(f"state is for {state.get('kind')!r}, not {kind!r}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"state format version {state.get('version')!r} is not supported "
            f"(this driftline reads version {STATE_VERSION})"
        )
    params: dict[str, Any] = state["params"]
    return params
