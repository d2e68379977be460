"""A model's most recent events, value by value: what a re-baseline "from recent" takes.

A :class:`RecentValues` keeps the last ``size`` events of one model as they arrived
(numeric values as float64, NaN for missing; categorical values as strings or None), in a
ring: 8 bytes per numeric value and a pointer per categorical value, so 5,000 events of
20 numeric features take about 0.8 MB. It is part of the model's checkpointed state.

>>> r = RecentValues(size=3, n_numeric=1, n_categorical=1)
>>> r.push(np.array([[1.0], [2.0]]), [["a", "b"]])
>>> r.push(np.array([[3.0], [4.0]]), [["c", None]])
>>> num, cat = r.last(3)
>>> num[:, 0].tolist(), cat
([2.0, 3.0, 4.0], [['b', 'c', None]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RecentValues:
    def __init__(self, size: int, n_numeric: int, n_categorical: int) -> None:
        self.size = size
        self.numeric = np.full((size, n_numeric), np.nan)
        self.categorical = np.full((size, n_categorical), None, dtype=object)
        self.pos = 0  # where the next event goes
        self.count = 0  # events pushed, at most ``size`` kept

    @property
    def available(self) -> int:
        return min(self.count, self.size)

    def push(self, numeric: np.ndarray, categorical: Sequence[Sequence[str | None]]) -> None:
        """Append a batch (rows of ``numeric``; one list per categorical series)."""
        n = numeric.shape[0]
        if n == 0 or self.size == 0:
            return
        keep = min(n, self.size)
        idx = (self.pos + np.arange(keep)) % self.size
        self.numeric[idx] = numeric[n - keep :]
        for j, col in enumerate(categorical):
            self.categorical[idx, j] = list(col[n - keep :])
        self.pos = int((self.pos + keep) % self.size)
        self.count += n

    def last(self, n: int) -> tuple[np.ndarray, list[list[str | None]]]:
        """The last ``n`` events (at most those kept), oldest first."""
        n = min(n, self.available)
        idx = (self.pos - n + np.arange(n)) % self.size if n else np.empty(0, dtype=np.int64)
        cats = [list(self.categorical[idx, j]) for j in range(self.categorical.shape[1])]
        return self.numeric[idx].copy(), cats

    def export_state(self) -> dict[str, Any]:
        num, cat = self.last(self.available)
        return {"size": self.size, "count": self.count, "numeric": num, "categorical": cat}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`export_state` (None, from an older checkpoint: empty)."""
        self.numeric[:] = np.nan
        self.categorical[:] = None
        self.pos = self.count = 0
        if state is None:
            return
        cats = state["categorical"]
        rows = len(cats[0]) if cats else -1  # numeric may have no columns
        num = np.asarray(state["numeric"], dtype=np.float64).reshape(rows, self.numeric.shape[1])
        self.push(num, cats)
        self.count = max(self.count, int(state["count"]))
