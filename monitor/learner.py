"""The online challenger: a river learner that keeps learning from joined labels.

Every joined pair is used **test-then-train**: the learner predicts the features, the
prediction is scored against the label (its prequential metrics sit next to the production
model's), then it learns the pair. Learning runs in its own thread behind a bounded queue,
so it never stalls consumption or drift detection: when the queue is full, new pairs are
dropped and counted (the learner then learns from a sample of the stream), and the queue
depth is exposed as the learner's lag.

**Adaptation**: when concept drift is detected on the production model's errors, the
learner is replaced by a fresh one trained on the labelled pairs since the estimated change
point (up to ``retrain_max`` of them, kept in a ring); the alert says so.

Learners (``online_model.learner``):

* classification: ``logistic_regression`` (standardised numbers, one-hot categories),
  ``hoeffding_adaptive_tree``, ``adaptive_random_forest``;
* regression: ``linear_regression`` (standardised, one-hot), ``hoeffding_adaptive_tree``
  (the regressor), ``adaptive_random_forest`` (the regressor).

``online_model.params`` go to the river estimator (e.g. ``{l2: 0.01}``, ``{seed: 1}``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from typing import Any

from .labels import Performance, Task

log = logging.getLogger("driftline.learner")

LEARNERS = (
    "logistic_regression",
    "linear_regression",
    "hoeffding_adaptive_tree",
    "adaptive_random_forest",
)

Features = dict[str, Any]
Pair = tuple[Features, Any]


def make_model(learner: str, task: Task, params: dict[str, Any]) -> Any:
    """A fresh river estimator for ``learner`` and ``task``."""
    from river import forest, linear_model, preprocessing, tree

    if learner == "logistic_regression":
        if task != "classification":
            raise ValueError("logistic_regression is for classification; use linear_regression")
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(**params)
    if learner == "linear_regression":
        if task != "regression":
            raise ValueError("linear_regression is for regression; use logistic_regression")
        return preprocessing.StandardScaler() | linear_model.LinearRegression(**params)
    if learner == "hoeffding_adaptive_tree":
        if task == "classification":
            return tree.HoeffdingAdaptiveTreeClassifier(**params)
        return tree.HoeffdingAdaptiveTreeRegressor(**params)
    if learner == "adaptive_random_forest":
        if task == "classification":
            return forest.ARFClassifier(**params)
        return forest.ARFRegressor(**params)
    raise ValueError(f"unknown learner {learner!r}; choose one of {', '.join(LEARNERS)}")


def river_features(features: Features, one_hot: bool) -> dict[str, Any]:
    """Features as river takes them: missing values left out; categories one-hot encoded
    for linear models, kept as nominal strings for trees.

    >>> river_features({"age": 41.0, "elevel": "2", "loan": None}, one_hot=True)
    {'age': 41.0, 'elevel=2': 1.0}
    """
    out: dict[str, Any] = {}
    for name, value in features.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, str):
            if one_hot:
                out[f"{name}={value}"] = 1.0
            else:
                out[name] = value
        else:
            out[name] = value
    return out


class OnlineLearner:
    """One model's challenger: a river estimator fed from a bounded queue by its thread."""

    def __init__(
        self,
        learner: str,
        task: Task,
        params: dict[str, Any],
        *,
        queue_size: int = 10_000,
        retrain_max: int = 5_000,
        window: int = 1000,
        decay: float = 0.001,
    ) -> None:
        self.learner = learner
        self.task = task
        self.params = dict(params)
        self.one_hot = learner in ("logistic_regression", "linear_regression")
        self.model = make_model(learner, task, self.params)  # raises for a bad choice
        self.performance = Performance(task, window, decay)
        self.learned = 0
        self.dropped = 0
        self.adaptations = 0
        self._recent: deque[Pair] = deque(maxlen=retrain_max)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- the consuming side --------------------------------------------------------------
    def submit(self, pairs: list[Pair]) -> None:
        """Hand joined pairs over without ever blocking; a full queue drops and counts."""
        for pair in pairs:
            try:
                self._queue.put_nowait(("learn", pair))
            except queue.Full:
                self.dropped += 1

    def adapt(self, since: int) -> str:
        """Queue the drift adaptation; returns the sentence an alert carries."""
        try:
            self._queue.put_nowait(("adapt", since))
        except queue.Full:
            self._queue.put(("adapt", since))  # rare and important: wait for one slot
        return (
            f"online learner ({self.learner}) replaced by a fresh one trained on the "
            f"labelled events since the change (at most {self._recent.maxlen})"
        )

    @property
    def lag(self) -> int:
        """Pairs waiting to be learned."""
        return self._queue.qsize()

    # -- the learning thread -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="driftline-learner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(("stop", None))
            self._thread.join(timeout)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued pair is learned (tests, benchmarks, shutdown)."""
        done = threading.Event()
        self._queue.put(("mark", done))
        done.wait(timeout)

    def _run(self) -> None:
        try:
            while True:
                kind, item = self._queue.get()
                if kind == "stop":
                    return
                if kind == "mark":
                    item.set()
                elif kind == "adapt":
                    self._adapt(int(item))
                else:
                    self._learn(item)
        except BaseException as exc:  # surfaced in /status; the daemon keeps monitoring
            self.error = exc
            log.exception("the online learner stopped")

    def _learn(self, pair: Pair) -> None:
        features, label = pair
        x = river_features(features, self.one_hot)
        with self._lock:
            guess = self._predict_value(x)
            self.performance.add([(guess, label, math.nan)])
            self.model.learn_one(x, self._target(label))
            self.learned += 1
        self._recent.append(pair)

    def _adapt(self, since: int) -> None:
        keep = max(0, self.performance.n - since)
        history = list(self._recent)[-keep:] if keep else []
        fresh = make_model(self.learner, self.task, self.params)
        for features, label in history:
            fresh.learn_one(river_features(features, self.one_hot), self._target(label))
        with self._lock:
            self.model = fresh
            self.adaptations += 1
        log.info("online learner replaced, trained on %d pairs since the change", len(history))

    # -- predictions -----------------------------------------------------------------------
    def _target(self, label: Any) -> Any:
        if self.task == "regression":
            return float(label)
        if isinstance(label, bool):
            return label
        if isinstance(label, int | float) and float(label) in (0.0, 1.0):
            return bool(label)
        return label

    def _predict_value(self, x: dict[str, Any]) -> Any:
        """What the scoring of test-then-train compares with the label: the probability
        of the positive class for binary labels, else the predicted value."""
        if self.task == "regression":
            y = self.model.predict_one(x)
            return 0.0 if y is None else float(y)
        proba = self.model.predict_proba_one(x)
        if proba and set(proba) <= {True, False}:
            return float(proba.get(True, 0.0))
        return self.model.predict_one(x)

    def predict(self, features: Features) -> dict[str, Any]:
        """The answer of ``POST /models/{model}/predict``."""
        x = river_features(features, self.one_hot)
        with self._lock:
            if self.task == "regression":
                y = self.model.predict_one(x)
                return {"prediction": None if y is None else float(y), "learned": self.learned}
            proba = self.model.predict_proba_one(x) or {}
            label = self.model.predict_one(x)
        return {
            "prediction": _jsonable(label),
            "proba": {
                str(_jsonable(k)).lower() if isinstance(k, bool) else str(k): float(v)
                for k, v in proba.items()
            },
            "learned": self.learned,
        }


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)
