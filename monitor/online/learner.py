"""The online challenger: a river learner that keeps learning from joined labels.

Every joined pair is used **test-then-train**: the learner predicts the features, the
prediction is scored against the label (its prequential metrics sit next to the production
model's), then it learns the pair. Learning runs in its own process behind a bounded
backlog, so it never stalls consumption or drift detection: beyond ``queue_size`` pairs not
yet learned, new batches are dropped and counted (the learner then learns from a sample of
the stream), and the backlog is exposed as the learner's lag.

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

import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import threading
from collections import deque
from typing import Any

from monitor.online.labels import Performance, Task
from monitor.serve.snapshot import LearnerStatus

log = logging.getLogger("driftline.learner")

LEARNERS = (
    "logistic_regression",
    "linear_regression",
    "hoeffding_adaptive_tree",
    "adaptive_random_forest",
)

Features = dict[str, Any]
Pair = tuple[Features, Any]
Rows = tuple[Any, list[tuple[Any, ...]], list[Any]]  # (numeric matrix, categorical rows, labels)


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


class _Core:
    """The estimator and its bookkeeping; lives in the learner process."""

    def __init__(
        self,
        learner: str,
        task: Task,
        params: dict[str, Any],
        retrain_max: int,
        window: int,
        decay: float,
        numeric: list[str],
        categorical: list[str],
    ) -> None:
        self.numeric, self.categorical = numeric, categorical
        self.learner, self.task, self.params = learner, task, params
        self.one_hot = learner in ("logistic_regression", "linear_regression")
        self.model = make_model(learner, task, params)
        self.performance = Performance(task, window, decay)
        self.learned = 0
        self.adaptations = 0
        self.recent: deque[Pair] = deque(maxlen=retrain_max)

    def target(self, label: Any) -> Any:
        if self.task == "regression":
            return float(label)
        if isinstance(label, bool):
            return label
        if isinstance(label, int | float) and float(label) in (0.0, 1.0):
            return bool(label)
        return label

    def adapt(self, since: int) -> None:
        keep = max(0, self.performance.n - since)
        history = list(self.recent)[-keep:] if keep else []
        fresh = make_model(self.learner, self.task, self.params)
        for features, label in history:
            fresh.learn_one(river_features(features, self.one_hot), self.target(label))
        self.model = fresh
        self.adaptations += 1

    def guess(self, x: dict[str, Any]) -> Any:
        """What test-then-train scores: P(positive) for binary labels, else the value."""
        if self.task == "regression":
            y = self.model.predict_one(x)
            return 0.0 if y is None else float(y)
        proba = self.model.predict_proba_one(x)
        if proba and set(proba) <= {True, False}:
            return float(proba.get(True, 0.0))
        return self.model.predict_one(x)

    def predict(self, features: Features) -> dict[str, Any]:
        x = river_features(features, self.one_hot)
        if self.task == "regression":
            y = self.model.predict_one(x)
            return {"prediction": None if y is None else float(y), "learned": self.learned}
        proba = self.model.predict_proba_one(x) or {}
        return {
            "prediction": _jsonable(self.model.predict_one(x)),
            "proba": {
                ("true" if k is True else "false" if k is False else str(k)): float(v)
                for k, v in proba.items()
            },
            "learned": self.learned,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "adaptations": self.adaptations,
            "metrics": self.performance.metrics(),
        }

    def learn_rows(self, rows: Rows) -> None:
        """Test-then-train a batch (a numeric matrix, categorical tuples, labels): each pair
        is predicted before it is learned; the scores are added to the metrics in one go."""
        num, cats, labels = rows
        scored: list[tuple[Any, Any, float]] = []
        for i, label in enumerate(labels):
            features: Features = dict(zip(self.numeric, num[i].tolist(), strict=True))
            if self.categorical:
                features.update(zip(self.categorical, cats[i], strict=True))
            x = river_features(features, self.one_hot)
            scored.append((self.guess(x), label, math.nan))
            self.model.learn_one(x, self.target(label))
            self.recent.append((features, label))
        self.learned += len(labels)
        self.performance.add(scored)


def _serve(args: tuple[Any, ...], inbox: Any, requests: Any, outbox: Any) -> None:
    """The learner process: learn what arrives, answer predictions first. It runs at a lower
    CPU priority: when the machine is busy, consumption and detection go first and the
    learner falls behind, which makes it sample (see OnlineLearner.submit)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    core = _Core(*args)
    while True:
        try:
            while True:  # predictions never wait behind a learning backlog
                rid, features = requests.get_nowait()
                outbox.put(("answer", rid, core.predict(features)))
        except queue.Empty:
            pass
        try:
            kind, item = inbox.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind == "stop":
            outbox.put(("stats", None, core.stats()))
            return
        if kind == "learn":
            core.learn_rows(item)
        elif kind == "adapt":
            core.adapt(int(item))
        elif kind == "export":  # everything learned so far, in submission order
            outbox.put(("answer", item, (pickle.dumps(core, protocol=5), core.learned)))
            continue
        elif kind == "load":
            core = pickle.loads(item) if item is not None else _Core(*args)
        outbox.put(("stats", item if kind == "mark" else None, core.stats()))


class LearnerProcess:
    """The learner's process and the plumbing to it: three queues (work in, prediction
    requests in, answers and stats out), a reader thread that resolves whoever waits for
    an answer (a thread's event, or an asyncio future through its loop) and hands stats to
    ``on_stats``. Nothing waits on a dead process: its waiters are failed at once."""

    MAX_PREDICTIONS = 64  # predictions in flight; beyond, /predict answers 503

    def __init__(self, args: tuple[Any, ...], on_stats: Any) -> None:
        self.args = args
        self.on_stats = on_stats
        self.error: str | None = None
        self._ctx = mp.get_context("spawn")
        self.process: Any = None
        self._reader: threading.Thread | None = None
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._futures: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._early: list[tuple[str, Any]] = []  # sent before start

    @property
    def started(self) -> bool:
        return self.process is not None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def send(self, kind: str, item: Any) -> None:
        if self.process is None:
            self._early.append((kind, item))
            return
        with contextlib.suppress(OSError, ValueError):  # a dead process's queue is closed
            self._inbox.put((kind, item))

    def start(self, first: list[tuple[str, Any]] | None = None) -> None:
        self._inbox = self._ctx.Queue()
        self._requests = self._ctx.Queue()
        self._outbox = self._ctx.Queue()
        self.error = None
        self.process = self._ctx.Process(
            target=_serve,
            args=(self.args, self._inbox, self._requests, self._outbox),
            name="driftline-learner",
            daemon=True,
        )
        self.process.start()
        for kind, item in [*(first or []), *self._early]:
            self._inbox.put((kind, item))
        self._early.clear()
        self._reader = threading.Thread(
            target=self._read,
            args=(self.process, self._outbox),
            name="driftline-learner-reader",
            daemon=True,
        )
        self._reader.start()

    def _read(self, process: Any, outbox: Any) -> None:
        while True:
            try:
                kind, tag, payload = outbox.get(timeout=0.5)
            except queue.Empty:
                if not process.is_alive():
                    if process.exitcode not in (0, None) and process is self.process:
                        self.error = f"learner process exited with {process.exitcode}"
                        log.error("the online learner died: %s", self.error)
                    self.wake_all()
                    return
                continue
            except (EOFError, OSError):
                self.wake_all()
                return
            if kind == "answer":
                self._answer(tag, payload)
                continue
            self.on_stats(payload)
            if tag is not None:
                self._answer(tag, None)

    def _answer(self, tag: int, payload: Any) -> None:
        with self._lock:
            slot = self._waiting.pop(tag, None)
            fut = self._futures.pop(tag, None)
        if slot is not None:
            slot[1].append(payload)
            slot[0].set()
        if fut is not None:
            loop, future = fut
            loop.call_soon_threadsafe(_resolve, future, payload)

    def wake_all(self) -> None:
        with self._lock:
            slots, self._waiting = list(self._waiting.values()), {}
            futures, self._futures = list(self._futures.values()), {}
        for event, _ in slots:
            event.set()
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(_fail, future, "the online learner stopped")

    def ask(self, kind: str, timeout: float) -> list[Any] | None:
        """Send ``kind`` with a ticket and wait (blocking) for its answer: the answer in a
        list, or None when none came within ``timeout`` (or the process died)."""
        with self._lock:
            self._next_id += 1
            rid, event = self._next_id, threading.Event()
            box: list[Any] = []
            self._waiting[rid] = (event, box)
        self.send(kind, rid)
        return box if event.wait(timeout) and box else None

    async def predict(self, features: Features, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if len(self._futures) >= self.MAX_PREDICTIONS:
                raise RuntimeError("too many predictions waiting; try again")
            self._next_id += 1
            rid = self._next_id
            self._futures[rid] = (loop, future)
        self._requests.put((rid, features))
        try:
            result: dict[str, Any] = await asyncio.wait_for(future, timeout)
        finally:
            with self._lock:
                self._futures.pop(rid, None)
        return result

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._inbox.put(("stop", None))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()  # it ignored SIGTERM (stopped, or stuck in native code)
            self.process.join(timeout)
        # Whatever the process did not read is dropped: a queue's feeder thread would
        # otherwise block this process's exit, writing into a pipe nobody reads.
        for q in (self._inbox, self._requests):
            q.cancel_join_thread()
            q.close()
        if self._reader is not None:
            self._reader.join(timeout)
        self.wake_all()


class OnlineLearner:
    """One model's challenger, in its own process: river learners are pure Python and would
    hold the GIL against the consume loop if they ran in a thread (measured: the daemon fell
    to 6% of its rate with a logistic regression learning in a thread).

    ``submit`` never blocks: beyond ``queue_size`` pairs not yet learned, whole batches are
    dropped and counted, so the learner learns from a sample of the stream when it cannot
    keep up. Predictions go ahead of any learning backlog.

    **Failure**: the process can die (killed, out of memory). Its reader thread notices,
    logs it, fails whatever waits for an answer, and :meth:`check` reports it; the daemon's
    supervisor then calls :meth:`restart` with backoff: a new process continues from the
    learner's last exported state (the last checkpoint), the pairs learned since then are
    lost (counted in ``dropped``). Nothing waits on a dead process: :meth:`export_state`
    answers the last exported state at once.

    Threads: ``submit``, ``adapt``, ``export_state`` and ``load_state`` are called by the
    daemon's worker; ``predict`` from the event loop; the reader thread only sets plain
    attributes and resolves waiters.
    """

    def __init__(
        self,
        learner: str,
        task: Task,
        params: dict[str, Any],
        *,
        numeric: list[str],
        categorical: list[str],
        queue_size: int = 10_000,
        retrain_max: int = 5_000,
        window: int = 1000,
        decay: float = 0.001,
        export_timeout_s: float = 30.0,
    ) -> None:
        make_model(learner, task, params)  # refuse a bad choice now, not in the process
        self.learner = learner
        self.task = task
        self.queue_size = queue_size
        self.retrain_max = retrain_max
        self.export_timeout_s = export_timeout_s
        args = (
            learner,
            task,
            dict(params),
            retrain_max,
            window,
            decay,
            list(numeric),
            list(categorical),
        )
        self.proc = LearnerProcess(args, self._stats)
        self.submitted = 0
        self.dropped = 0
        self.learned = 0
        self.adaptations = 0
        self.restarts = 0
        self._metrics: dict[str, float | None] = {}
        # The last state handed over (a checkpoint's), what a restarted process starts from.
        self._last: dict[str, Any] = {"core": None, "learned": 0}

    def _stats(self, payload: dict[str, Any]) -> None:  # from the reader thread
        self.learned = payload["learned"]
        self.adaptations = payload["adaptations"]
        self._metrics = payload["metrics"]

    @property
    def lag(self) -> int:
        """Pairs handed over and not yet learned."""
        return max(0, self.submitted - self.learned)

    @property
    def alive(self) -> bool:
        return self.proc.alive

    @property
    def error(self) -> str | None:
        return self.proc.error

    def metrics(self) -> dict[str, float | None]:
        """The challenger's prequential metrics (as last reported by its process)."""
        return dict(self._metrics)

    def status(self) -> LearnerStatus:
        return LearnerStatus(
            self.learner,
            self.learned,
            self.lag,
            self.dropped,
            self.adaptations,
            self.restarts,
            dict(self._metrics),
            self.error,
        )

    def submit(self, rows: Rows) -> None:
        """Hand a batch over: ``(numeric matrix, categorical tuples, labels)``, rows in the
        order of the ``numeric`` and ``categorical`` feature names. A numpy matrix crosses
        to the learner process as one copy; dicts are built there."""
        n = len(rows[2])
        if not n:
            return
        if self.lag + n > self.queue_size or (self.proc.started and not self.alive):
            self.dropped += n
            return
        self.submitted += n
        self.proc.send("learn", rows)

    def adapt(self, since: int) -> str:
        self.proc.send("adapt", since)
        return (
            f"online learner ({self.learner}) replaced by a fresh one trained on the "
            f"labelled events since the change (at most {self.retrain_max})"
        )

    def start(self) -> None:
        self.proc.start()

    def check(self) -> str | None:
        """Why the process is not running, if it died (for the supervisor)."""
        if not self.proc.started or self.alive:
            return None
        return self.error or f"learner process exited with {self.proc.process.exitcode}"

    def restart(self) -> None:
        """A new process, continuing from the last exported state (see the class doc)."""
        lost = max(0, self.learned - int(self._last["learned"]))
        self.restarts += 1
        self.dropped += lost + self.lag
        self.learned = self.submitted = int(self._last["learned"])
        log.warning(
            "restarting the %s learner from its last checkpointed state (%d pairs learned "
            "since are lost)",
            self.learner,
            lost,
        )
        self.proc.stop(timeout=1.0)
        self.proc.start(first=[("load", self._last["core"])])

    async def predict(self, features: Features, timeout: float = 5.0) -> dict[str, Any]:
        """The answer of ``POST /models/{model}/predict``; RuntimeError when the learner
        is not running or too many predictions are waiting, TimeoutError after ``timeout``."""
        if not self.alive:
            raise RuntimeError(self.check() or "the online learner is not running")
        return await self.proc.predict(features, timeout)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until everything submitted so far is learned (tests, benchmarks)."""
        if self.alive:
            self.proc.ask("mark", timeout)

    def export_state(self) -> dict[str, Any]:
        """The learner's model and bookkeeping after everything submitted so far (blocking:
        it waits for the learning backlog, at most ``export_timeout_s``; call it off the
        event loop). A learner that is not running, or does not answer in time, gives its
        last exported state instead (logged). River estimators are pickled: see the trust
        boundary in monitor.state.codec."""
        if self.alive:
            answer = self.proc.ask("export", self.export_timeout_s)
            if answer is not None:
                core, learned = answer[0]
                self._last = {"core": core, "learned": learned}
            else:
                log.error(
                    "the online learner (%s) did not hand over its state within %.0f s; "
                    "the checkpoint keeps its previous state",
                    self.learner,
                    self.export_timeout_s,
                )
        return {**self._last, "dropped": self.dropped}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`export_state`, or start afresh with ``None``."""
        core = None if state is None else state["core"]
        self.dropped = 0 if state is None else int(state["dropped"])
        learned = 0 if state is None else int(state["learned"])
        self._last = {"core": core, "learned": learned}
        self.proc.send("load", core)  # unpickled in the learner's process only
        self.submitted = self.learned = learned

    def stop(self, timeout: float = 5.0) -> None:
        self.proc.stop(timeout)


def _resolve(future: asyncio.Future[Any], payload: Any) -> None:
    if not future.done():
        future.set_result(payload)


def _fail(future: asyncio.Future[Any], reason: str) -> None:
    if not future.done():
        future.set_exception(RuntimeError(reason))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)
