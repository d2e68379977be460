"""``driftline replay``: the daemon's pipeline over event files, with no Kafka.

The same :class:`~monitor.online.pipeline.Pipeline` as ``driftline run`` (decode, the
detectors, the label join, the alert policy, and the online learners when configured),
fed batch by batch, the next batch decoded while the detectors run on the previous one. The
alerts are the daemon's, document for document and with the same ids, for the same events
in the same order: the pipeline's output does not depend on how a stream is batched.
Malformed lines are counted by reason and reported with their place (``file:line``);
``strict`` makes the first one an error. Labels are read from the events themselves
(``label``); events without ``ts`` have no event time here (in Kafka, the record's
timestamp stands in).

>>> from monitor.config.schema import parse_config
>>> cfg = parse_config({"kafka": {"topic": "t"}, "defaults": {"reference": {"warmup": 20}},
...     "models": {"m": {"features": {"x": "numeric"}}}}, env={})
>>> from monitor.replay.inputs import Line
>>> feed = [Line(f"f:{i}", b'{"model": "m", "features": {"x": 1.0}}') for i in range(30)]
>>> result = asyncio.run(Replay(cfg).run(feed + [Line("f:31", b"{oops")]))
>>> result.events, [(m.where, m.reason) for m in result.malformed]
(30, [('f:31', 'bad_json')])
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from monitor.alerting.alerts import Alert
from monitor.app.build import build_learners
from monitor.config.plan import plan
from monitor.config.schema import Config
from monitor.online.pipeline import Decoded, Detected, Pipeline
from monitor.replay.inputs import Line
from sinks.base import Sink

KEEP_MALFORMED = 1000  # malformed lines kept with their place (all are counted)


@dataclass(frozen=True)
class Malformed:
    where: str  # file:line
    reason: str
    detail: str


class StrictError(ValueError):
    """A malformed line under ``strict``."""


@dataclass
class ReplayResult:
    lines: int = 0
    events: int = 0  # accepted
    alerts: list[Alert] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)  # the first KEEP_MALFORMED
    rejected: Counter[str] = field(default_factory=Counter)  # every malformed line, by reason
    seconds: float = 0.0
    events_by_model: dict[str, int] = field(default_factory=dict)


class Replay:
    """One replay of a configuration (see the module doc). ``sinks`` (started and closed
    by the caller) receive the alerts as the daemon's would; ``on_batch(result)`` is called
    after every batch (progress)."""

    def __init__(
        self,
        config: Config,
        *,
        learners: bool = True,
        sinks: Sequence[Sink] = (),
        batch: int = 5000,
        strict: bool = False,
        on_batch: Callable[[ReplayResult], None] | None = None,
    ) -> None:
        plans = plan(config)
        self.learners = build_learners(plans) if learners else {}
        self.pipeline = Pipeline(
            plans,
            learners=self.learners,
            max_record_bytes=config.kafka.max_record_bytes,
            max_future_s=config.events.max_future_s,
        )
        self.sinks = list(sinks)
        self.batch = batch
        self.strict = strict
        self.on_batch = on_batch
        self.result = ReplayResult()

    async def run(self, inputs: Iterable[Line]) -> ReplayResult:
        """Replay every line of ``inputs``; returns what came of it."""
        start = time.perf_counter()
        for learner in self.learners.values():
            learner.start()
        worker = ThreadPoolExecutor(1, thread_name_prefix="driftline-replay")
        loop = asyncio.get_running_loop()
        inflight: tuple[list[Line], asyncio.Future[Detected]] | None = None
        try:
            it = iter(inputs)
            while chunk := list(itertools.islice(it, self.batch)):
                decoded = self.pipeline.decode([line.value for line in chunk])
                self._rejected(chunk, decoded)
                job = loop.run_in_executor(worker, self.pipeline.detect, decoded)
                if inflight is not None:
                    await self._finish(*inflight)
                inflight = (chunk, job)
            if inflight is not None:
                await self._finish(*inflight)
        finally:
            if inflight is not None and not inflight[1].done():
                await asyncio.wait([inflight[1]])
            worker.shutdown(wait=True)
            for learner in self.learners.values():
                learner.stop()
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _rejected(self, chunk: list[Line], decoded: Decoded) -> None:
        for r in decoded.rejected:
            self._malformed(Malformed(chunk[r.index].where, r.reason, r.detail))

    def _malformed(self, m: Malformed) -> None:
        if self.strict:
            raise StrictError(f"{m.where}: {m.reason}: {m.detail}")
        self.result.rejected[m.reason] += 1
        if len(self.result.malformed) < KEEP_MALFORMED:
            self.result.malformed.append(m)

    async def _finish(self, chunk: list[Line], job: asyncio.Future[Detected]) -> None:
        detected = await job
        for r in detected.failed:
            self._malformed(Malformed(chunk[r.index].where, r.reason, r.detail))
        res = self.result
        res.lines += len(chunk)
        res.alerts += detected.alerts
        for sink in self.sinks:
            if detected.alerts:
                await sink.emit(detected.alerts)
        res.events_by_model = {m: s.events for m, s in self.pipeline.status.models.items()}
        res.events = sum(res.events_by_model.values())
        if self.on_batch is not None:
            self.on_batch(res)


@dataclass
class SeriesSummary:
    """What a replay's alerts say of one series (or of a model as a whole)."""

    model: str
    feature: str | None  # None: a model-level alert of ``detectors``' one kind
    episodes: int = 0
    first_event: int | None = None
    first_at: str | None = None
    detectors: set[str] = field(default_factory=set)


def summarize(alerts: Iterable[Alert]) -> list[SeriesSummary]:
    """Per model and series (and per kind of model-level alert: ``multiple``,
    ``concept_drift``, whose events are labelled pairs): the episodes fired, the first
    one's event and time, the detectors that fired, in order of first alert."""
    out: dict[tuple[str, str], SeriesSummary] = {}
    seen: set[str] = set()
    for a in alerts:
        if a.status != "firing" or a.id in seen:
            continue
        seen.add(a.id)
        key = (a.model, a.feature if a.feature is not None else f"({a.detector})")
        s = out.setdefault(key, SeriesSummary(a.model, a.feature))
        s.episodes += 1
        s.detectors.add(a.detector)
        if s.first_event is None or a.start_event < s.first_event:
            s.first_event, s.first_at = a.start_event, a.started_at
    return sorted(out.values(), key=lambda s: (s.model, s.first_event or 0))


def alert_lines(alerts: Iterable[Alert]) -> Iterable[bytes]:
    """Alerts as JSON Lines: each line one alert document, as in a webhook body's
    ``alerts``."""
    import orjson

    for a in alerts:
        doc: dict[str, Any] = a.to_dict()
        yield orjson.dumps(doc) + b"\n"
