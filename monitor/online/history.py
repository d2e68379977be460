"""The recent scores of every series and detector, for the live status page (``/ui``).

One sample per published status of the model (after each batch that touched it): the
model's event count, the detector's score and its threshold. Only the last ``size`` are
kept; it lives in memory only (a restart starts it again) and costs the worker a tuple per
series and detector per batch.

>>> from monitor.serve.snapshot import DetectorStatus
>>> h = ScoreHistory(size=2)
>>> for events, score in [(100, 0.1), (200, 0.2), (300, 0.3)]:
...     h.add("m", events, {"x": [DetectorStatus("ks", score, 0.5, False, 100, 500, None)]})
>>> h.view("m")["x"]["ks"]
((200, 0.2, 0.5), (300, 0.3, 0.5))
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

from monitor.serve.snapshot import DetectorStatus

Sample = tuple[int, float, float]  # (event, score, threshold)


class ScoreHistory:
    def __init__(self, size: int = 120) -> None:
        self.size = size
        self._rings: dict[str, dict[str, dict[str, deque[Sample]]]] = {}

    def add(self, model: str, events: int, series: Mapping[str, Iterable[DetectorStatus]]) -> None:
        """One sample per series and detector that has checked at least once."""
        rings = self._rings.setdefault(model, {})
        for name, detectors in series.items():
            for d in detectors:
                if not math.isfinite(d.score):
                    continue
                ring = rings.setdefault(name, {}).setdefault(d.detector, deque(maxlen=self.size))
                if not ring or ring[-1][0] != events:
                    ring.append((events, float(d.score), float(d.threshold)))

    def view(self, model: str) -> dict[str, dict[str, tuple[Sample, ...]]]:
        """An immutable copy of one model's history (for the status snapshot)."""
        return {
            name: {det: tuple(ring) for det, ring in dets.items()}
            for name, dets in self._rings.get(model, {}).items()
        }

    def forget(self, model: str) -> None:
        self._rings.pop(model, None)
