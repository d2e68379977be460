"""Delayed labels: joining them to predictions, and the production model's performance.

Ground truth arrives later than the prediction, inside the prediction event (``label``) or
on its own topic as ``{"model": ..., "id": ..., "label": ..., "ts": ...}``, and the two
topics can be read in any order (after a restart with a backlog on both, the labels
partition is often read far ahead of the predictions). So both sides wait, per model, in
bounded buffers keyed by ``id``:

* **joined**: a label met its prediction, whichever came first;
* **expired**: a prediction left its buffer unlabelled, pushed out by ``max_pending``
  newer ones or older than ``max_age_s`` (event time: the newest ``ts`` the model has
  seen, predictions and labels alike);
* **orphan**: a label left its buffer without meeting its prediction, by the same rules
  (its prediction never came, had expired, or was labelled already).

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
class EarlyLabel:
    label: Any
    ts: float


@dataclass
class JoinCounts:
    joined: int = 0
    expired: int = 0
    orphan: int = 0


class LabelJoin:
    """Predictions waiting for their labels and labels waiting for their predictions, per
    model, each side bounded by count and by event-time age.

    >>> j = LabelJoin(max_pending=2, max_age_s=10.0)
    >>> j.expect("a", 0.9, ts=0.0); j.expect("b", 0.2, ts=1.0); j.expect("c", 0.4, ts=2.0)
    >>> j.label("c", 0, ts=3.0).prediction       # joined
    0.4
    >>> j.label("z", 1, ts=3.0) is None          # no prediction yet: the label waits
    True
    >>> j.expect("z", 0.7, ts=3.5)               # ... and joins when its prediction comes
    EarlyLabel(label=1, ts=3.0)
    >>> j.counts                                 # "a" was pushed out by "c"
    JoinCounts(joined=2, expired=1, orphan=0)
    """

    def __init__(self, max_pending: int, max_age_s: float) -> None:
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.early: OrderedDict[str, EarlyLabel] = OrderedDict()
        self.counts = JoinCounts()
        self.now = -math.inf

    def expect(
        self, pid: str, prediction: Any, ts: float, features: Any = None
    ) -> EarlyLabel | None:
        """A prediction that waits for its label; its label at once when that came first."""
        self._advance(ts)
        early = self.early.pop(pid, None)
        if early is not None:
            self.counts.joined += 1
            return early
        if pid in self.pending:  # a repeated id: the newest prediction wins
            del self.pending[pid]
            self.counts.expired += 1
        self.pending[pid] = Pending(prediction, ts, features)
        while len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.counts.expired += 1
        return None

    def label(self, pid: str, label: Any, ts: float) -> Pending | None:
        """A label: its prediction when that is waiting, else None (the label waits)."""
        self._advance(ts)
        found = self.pending.pop(pid, None)
        if found is not None:
            self.counts.joined += 1
            return found
        if pid in self.early:  # labelled twice before the prediction: the newest wins
            del self.early[pid]
            self.counts.orphan += 1
        self.early[pid] = EarlyLabel(label, ts)
        while len(self.early) > self.max_pending:
            self.early.popitem(last=False)
            self.counts.orphan += 1
        return None

    def _advance(self, ts: float) -> None:
        if not math.isfinite(ts) or ts <= self.now:
            return
        self.now = ts
        horizon = ts - self.max_age_s
        self.counts.expired += _age_out(self.pending, horizon)
        self.counts.orphan += _age_out(self.early, horizon)

    def export_state(self) -> dict[str, Any]:
        """Plain data: both buffers in order, the counts and the event-time clock."""
        return {
            "kind": "label_join",
            "version": 1,
            "pending": [(k, p.prediction, p.ts, p.features) for k, p in self.pending.items()],
            "early": [(k, e.label, e.ts) for k, e in self.early.items()],
            "counts": (self.counts.joined, self.counts.expired, self.counts.orphan),
            "now": self.now,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.pending = OrderedDict((k, Pending(p, ts, x)) for k, p, ts, x in state["pending"])
        self.early = OrderedDict((k, EarlyLabel(lab, ts)) for k, lab, ts in state["early"])
        self.counts = JoinCounts(*state["counts"])
        self.now = state["now"]


def _age_out(buffer: OrderedDict[str, Any], horizon: float) -> int:
    """Drop the entries older than ``horizon`` from the front of ``buffer`` (oldest first;
    NaN timestamps never age out by time); returns how many."""
    n = 0
    while buffer:
        oldest = next(iter(buffer.values()))
        if not (oldest.ts < horizon):
            break
        buffer.popitem(last=False)
        n += 1
    return n


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


_DEQUES = ("_trail", "_errors", "_sq", "_logloss", "_tp", "_pp", "_ap")


class Performance:
    """Prequential metrics of the production model and concept drift on its errors.

    Classification: a numeric prediction in [0, 1] is the probability of the positive class
    (label 1 / true), thresholded at 0.5 for accuracy and F1, and scored by log-loss; any
    other prediction is a class and only accuracy applies. Regression: MAE and RMSE.
    Sliding metrics cover the last ``window`` labelled pairs; the decayed error weighs each
    new pair by ``decay``. ADWIN watches the error stream; a detection reports the estimated
    change point and the error rates after it and over up to ``window`` pairs before it,
    computed on the errors up to the detecting pair (whatever the batch it came in).

    **Outliers** (regression): one absurd error (a prediction of 1e200) would widen ADWIN's
    bound for good. So ADWIN sees absolute errors clipped at a fence, the 99th percentile
    plus 10 interquartile ranges of the first ``window`` errors; until those are in, the
    errors wait (a concept drift in the first ``window`` pairs is reported once they are).
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
        self.fence: float | None = None  # regression: where ADWIN's input is clipped
        self._held: list[float] = []  # regression errors waiting for the fence
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
        start = self.n
        errors = np.array([self._score(pred, label) for pred, label, _ in pairs])
        ts = [t for _, _, t in pairs]
        self.n += len(pairs)
        # Every error of the trail and this batch, by pair: hist[k] is pair first + k.
        first = start - len(self._trail)
        hist = np.concatenate([np.array(self._trail, dtype=np.float64), errors])
        self._trail.extend(errors.tolist())
        values, at = self._feed(errors, start)
        if not len(values):
            return []
        result = self.adwin.update(values)
        fence = math.inf if self.fence is None else self.fence
        drifts = []
        for row in result.detections[0].tolist():
            index = int(at[row])
            upto = np.minimum(
                hist[max(0, index + 1 - first - 4 * self.window) : index + 1 - first], fence
            )
            upto = upto[~np.isnan(upto)]
            cut = change_point(upto)
            before = upto[max(0, cut - self.window) : cut]
            after = upto[cut:]
            drifts.append(
                ConceptDrift(
                    index,
                    ts[index - start] if index >= start else math.nan,
                    index - (len(upto) - cut) + 1,
                    float(before.mean()) if before.size else math.nan,
                    float(after.mean()) if after.size else math.nan,
                )
            )
        self.drifts += len(drifts)
        return drifts

    def _feed(self, errors: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """What ADWIN sees now and the pair number of each value: the errors as they are
        (classification), or clipped at the fence once the first ``window`` are in."""
        at = np.arange(start, start + len(errors))
        if self.task != "regression":
            return errors, at
        if self.fence is not None:
            return np.minimum(errors, self.fence), at
        held_from = start - len(self._held)
        self._held.extend(errors.tolist())
        known = np.array(self._held)
        finite = known[~np.isnan(known)]
        if finite.size < self.window:
            return np.empty(0), np.empty(0, dtype=np.int64)
        q25, q75, q99 = np.percentile(finite[: self.window], [25, 75, 99])
        self.fence = float(q99 + 10.0 * max(q75 - q25, 1e-12))
        self._held = []
        return np.minimum(known, self.fence), np.arange(held_from, held_from + len(known))

    def _score(self, pred: Any, label: Any) -> float:
        err = self._error(pred, label)
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
            except (TypeError, ValueError, OverflowError):
                return math.nan
            if not err < math.inf:  # an infinite or NaN error cannot be scored
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

    def export_state(self) -> dict[str, Any]:
        """Plain data: everything that determines the future metrics and drifts."""
        return {
            "kind": "performance",
            "version": 1,
            "task": self.task,
            "n": self.n,
            "drifts": self.drifts,
            "decayed_error": self.decayed_error,
            "adwin": self.adwin.export_state(),
            "fence": self.fence,
            "held": list(self._held),
            "deques": {name: list(getattr(self, name)) for name in _DEQUES},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.task = state["task"]
        self.n, self.drifts = state["n"], state["drifts"]
        self.decayed_error = state["decayed_error"]
        self.adwin = ADWIN.from_state(state["adwin"])
        self.fence, self._held = state["fence"], list(state["held"])
        for name in _DEQUES:
            q = getattr(self, name)
            q.clear()
            q.extend(state["deques"][name])

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
