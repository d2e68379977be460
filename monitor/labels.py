"""Delayed labels: joining them to predictions, and the production model's performance.

Ground truth arrives later than the prediction, inside the prediction event (``label``) or
on its own topic as ``{"model": ..., "id": ..., "label": ..., "ts": ...}``. Predictions
with an ``id`` wait in a bounded buffer per model until their label comes:

* **joined**: a label found its prediction;
* **expired**: a prediction left the buffer unlabelled, pushed out by ``max_pending`` newer
  ones or older than ``max_age_s`` (event time: the newest ``ts`` the model has seen);
* **orphan**: a label whose prediction is unknown (never seen, expired, or labelled already).

Each joined pair feeds :class:`Performance`: prequential (label-time) metrics over a
sliding window and exponentially decayed, and ADWIN on the error stream (0/1 loss for
classification, absolute error for regression) to detect concept drift.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detectors import ADWIN

Task = Literal["classification", "regression"]
EPS = 1e-15  # log-loss clipping, as is customary


@dataclass
class Pending:
    prediction: Any
    ts: float
    features: Any = None  # the event's features, kept for the online learner


@dataclass
class JoinCounts:
    joined: int = 0
    expired: int = 0
    orphan: int = 0


class LabelJoin:
    """Predictions waiting for their labels, per model, bounded by count and age.

    >>> j = LabelJoin(max_pending=2, max_age_s=10.0)
    >>> j.expect("a", 0.9, ts=0.0); j.expect("b", 0.2, ts=1.0); j.expect("c", 0.4, ts=2.0)
    >>> j.label("a", 1, ts=3.0) is None, j.label("c", 0, ts=3.0).prediction
    (True, 0.4)
    >>> j.counts
    JoinCounts(joined=1, expired=1, orphan=1)
    """

    def __init__(self, max_pending: int, max_age_s: float) -> None:
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.counts = JoinCounts()
        self.now = -math.inf

    def expect(self, pid: str, prediction: Any, ts: float, features: Any = None) -> None:
        if pid in self.pending:  # a repeated id: the newest prediction wins
            del self.pending[pid]
            self.counts.expired += 1
        self.pending[pid] = Pending(prediction, ts, features)
        self._advance(ts)
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.counts.expired += 1

    def label(self, pid: str, label: Any, ts: float) -> Pending | None:
        self._advance(ts)
        found = self.pending.pop(pid, None)
        if found is None:
            self.counts.orphan += 1
            return None
        self.counts.joined += 1
        return found

    def _advance(self, ts: float) -> None:
        if not math.isfinite(ts) or ts <= self.now:
            return
        self.now = ts
        horizon = ts - self.max_age_s
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if not (oldest.ts < horizon):  # NaN timestamps never age out by time
                break
            self.pending.popitem(last=False)
            self.counts.expired += 1


def infer_task(prediction: Any, label: Any) -> Task:
    """Classification for booleans, strings, and 0/1 labels; regression otherwise."""
    if isinstance(label, bool | str) or isinstance(prediction, str):
        return "classification"
    if isinstance(label, int | float) and float(label) in (0.0, 1.0):
        return "classification"
    return "regression"


def _as_class(value: Any) -> Any:
    """Labels and predicted classes compare as canonical strings (1, 1.0, "1", True -> "1")."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class ConceptDrift:
    """ADWIN signalled on the error stream at the model's labelled pair number ``index``;
    the change itself is estimated at pair ``change_at``, with the error rates (mean 0/1
    loss, or mean absolute error) before and after it."""

    index: int
    ts: float
    change_at: int
    error_before: float
    error_after: float


def change_point(errors: np.ndarray, min_side: int = 20) -> int:
    """The split of ``errors`` that best separates two means (the largest
    ``|mean(a) - mean(b)| * sqrt(n_a n_b / n)``); returns the first index of the second part.

    >>> change_point(np.r_[np.zeros(300), np.ones(40)])
    300
    """
    n = len(errors)
    if n < 2 * min_side:
        return n // 2
    csum = np.cumsum(errors)
    k = np.arange(min_side, n - min_side + 1)
    left = csum[k - 1] / k
    right = (csum[-1] - csum[k - 1]) / (n - k)
    score = np.abs(left - right) * np.sqrt(k * (n - k) / n)
    return int(k[np.argmax(score)])


class Performance:
    """Prequential metrics of the production model and concept drift on its errors.

    Classification: a numeric prediction in [0, 1] is the probability of the positive class
    (label 1 / true), thresholded at 0.5 for accuracy and F1, and scored by log-loss; any
    other prediction is a class and only accuracy applies. Regression: MAE and RMSE.
    Sliding metrics cover the last ``window`` labelled pairs; the decayed error weighs each
    new pair by ``decay``. ADWIN watches the error stream; a detection reports the estimated
    change point and the error rates after it and over up to ``window`` pairs before it.
    """

    def __init__(
        self,
        task: Task | None = None,
        window: int = 1000,
        decay: float = 0.001,
        delta: float = 0.002,
    ) -> None:
        self.task: Task | None = task
        self.window = window
        self.decay = decay
        self.n = 0
        self.drifts = 0
        self.decayed_error = math.nan
        self.adwin = ADWIN(delta=delta, n_series=1)
        self._trail: deque[float] = deque(maxlen=4 * window)  # recent errors, for drifts
        self._errors: deque[float] = deque(maxlen=window)
        self._sq: deque[float] = deque(maxlen=window)
        self._logloss: deque[float] = deque(maxlen=window)
        self._tp: deque[int] = deque(maxlen=window)
        self._pp: deque[int] = deque(maxlen=window)
        self._ap: deque[int] = deque(maxlen=window)

    def add(self, pairs: list[tuple[Any, Any, float]]) -> list[ConceptDrift]:
        """Score ``(prediction, label, ts)`` pairs in label order; returns concept drifts."""
        if not pairs:
            return []
        if self.task is None:
            self.task = infer_task(pairs[0][0], pairs[0][1])
        errors = np.array([self._score(pred, label) for pred, label, _ in pairs])
        start = self.n
        self.n += len(pairs)
        result = self.adwin.update(errors)
        drifts = []
        trail = np.array(self._trail)
        for row in result.detections[0].tolist():
            upto = trail[: len(trail) - (len(pairs) - 1 - row)]  # errors up to this pair
            upto = upto[~np.isnan(upto)]
            cut = change_point(upto)
            before = upto[max(0, cut - self.window) : cut]
            after = upto[cut:]
            index = start + row
            drifts.append(
                ConceptDrift(
                    index,
                    pairs[row][2],
                    index - (len(upto) - cut) + 1,
                    float(before.mean()) if before.size else math.nan,
                    float(after.mean()) if after.size else math.nan,
                )
            )
        self.drifts += len(drifts)
        return drifts

    def _score(self, pred: Any, label: Any) -> float:
        err = self._error(pred, label)
        self._trail.append(err)
        if not math.isnan(err):
            self._errors.append(err)
            if math.isnan(self.decayed_error):
                self.decayed_error = err
            else:
                self.decayed_error += self.decay * (err - self.decayed_error)
        return err

    def _error(self, pred: Any, label: Any) -> float:
        if self.task == "regression":
            try:
                err = abs(float(pred) - float(label))
            except (TypeError, ValueError):
                return math.nan
            self._sq.append(err * err)
            return err
        actual = _as_class(label)
        prob = float(pred) if isinstance(pred, int | float) and not isinstance(pred, bool) else None
        if prob is not None and 0.0 <= prob <= 1.0 and actual in ("0", "1"):
            predicted = "1" if prob >= 0.5 else "0"
            p = min(max(prob, EPS), 1 - EPS)
            self._logloss.append(-math.log(p if actual == "1" else 1 - p))
        else:
            predicted = _as_class(pred)
        self._tp.append(int(predicted == "1" and actual == "1"))
        self._pp.append(int(predicted == "1"))
        self._ap.append(int(actual == "1"))
        return 0.0 if predicted == actual else 1.0

    def metrics(self) -> dict[str, float | None]:
        """The sliding-window metrics (None where they do not apply or have no data)."""

        def mean(q: deque[Any]) -> float | None:
            return float(np.mean(q)) if q else None

        decayed = None if math.isnan(self.decayed_error) else self.decayed_error
        if self.task == "regression":
            mse = mean(self._sq)
            return {
                "mae": mean(self._errors),
                "rmse": None if mse is None else math.sqrt(mse),
                "decayed_mae": decayed,
            }
        err = mean(self._errors)
        tp, pp, ap = sum(self._tp), sum(self._pp), sum(self._ap)
        return {
            "accuracy": None if err is None else 1.0 - err,
            "log_loss": mean(self._logloss),
            "f1": 2 * tp / (pp + ap) if ap else None,
            "decayed_error_rate": decayed,
        }
