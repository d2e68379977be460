"""The composition root: a configuration in, a :class:`~monitor.app.daemon.Daemon` out.

This is the one place that reads the whole configuration and constructs the pieces:
the per-model plans, the pipeline, the online learners, the sinks (each in the shared
delivery wrappers), the Kafka source and dead-letter producer, the state store. Tests
pass their own collaborators (an in-memory source and store, a recording sink) and get
the same daemon.

Where state lives (``state``): ``changelog_topic`` (a Kafka topic, for scale-out),
``path`` (a directory), or by default the directory ``data/`` under the working
directory, as Prometheus and Alertmanager keep theirs; ``memory_only: true`` keeps nothing
(and says so at start). Undelivered alerts live in ``<state.path>/outbox`` unless
``outbox.path`` says otherwise, so a default configuration survives a crash as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from monitor.app.daemon import Daemon, Parts
from monitor.app.hooks import CrashPoints
from monitor.config.plan import ModelPlan, plan
from monitor.config.schema import Config
from monitor.ingest.kafka import KafkaDeadLetters, KafkaSource, client_options
from monitor.ingest.source import DeadLetters, NoDeadLetters, Source
from monitor.online.learner import OnlineLearner
from monitor.online.pipeline import Pipeline
from monitor.state.stores import LocalStore, Store
from sinks.base import Sink
from sinks.config import SinkContext
from sinks.outbox import Outbox
from sinks.registry import build_sink, named

DEFAULT_DATA_DIR = Path("data")


def data_dir(config: Config) -> Path | None:
    """The state directory: ``state.path``, else ``data/`` (None for the changelog or
    memory-only)."""
    st = config.state
    if st.memory_only or st.changelog_topic is not None:
        return None
    return st.path if st.path is not None else DEFAULT_DATA_DIR


def build_store(config: Config, executor: Any = None) -> Store | None:
    st = config.state
    if st.memory_only:
        return None
    if st.changelog_topic is not None:
        from monitor.state.changelog import ChangelogStore

        return ChangelogStore(
            st.changelog_topic, chunk_bytes=st.changelog_chunk_bytes, **client_options(config.kafka)
        )
    directory = data_dir(config)
    assert directory is not None
    return LocalStore(directory, executor=executor)


def outbox_dir(config: Config) -> Path | None:
    if config.outbox.path is not None:
        return config.outbox.path
    directory = data_dir(config)
    return None if directory is None else directory / "outbox"


def build_sinks(config: Config) -> list[Sink]:
    """Each configured sink: its transport inside the shared delivery wrappers
    (sinks.registry), named by ``name`` or its type (``webhook``, ``webhook-2``, ...)."""
    return [make_sink(config, name, spec) for name, spec in named(config.sinks)]


def make_sink(config: Config, name: str, spec: Any) -> Sink:
    """One configured sink (see :func:`build_sinks`)."""
    return build_sink(spec, SinkContext(name, outbox_dir(config), client_options(config.kafka)))


def build_learners(plans: dict[str, ModelPlan]) -> dict[str, OnlineLearner]:
    """One online challenger per model that configures ``online_model``."""
    out = {}
    for name, p in plans.items():
        om = p.online_model
        if om is None or p.task is None:
            continue
        out[name] = OnlineLearner(
            om.learner,
            p.task,  # type: ignore[arg-type]
            om.params,
            numeric=[n for n in p.numeric if n != "prediction"],
            categorical=[n for n in p.categorical if n != "prediction"],
            queue_size=om.queue_size,
            retrain_max=om.retrain_max,
            window=p.labels.window,
            decay=p.labels.decay,
        )
    return out


class _SupervisedLearner:
    """A learner as the supervisor watches it."""

    def __init__(self, model: str, learner: OnlineLearner) -> None:
        self.name = f"learner:{model}"
        self.learner = learner

    def check(self) -> str | None:
        return self.learner.check()

    def restart(self) -> None:
        self.learner.restart()


class SupervisedSink:
    def __init__(self, sink: Outbox) -> None:
        self.name = f"sink:{sink.name}"
        self.sink = sink

    def check(self) -> str | None:
        return self.sink.check()

    async def restart(self) -> None:
        await self.sink.restart()


def build(
    config: Config,
    *,
    source: Source | None = None,
    dead_letters: DeadLetters | None = None,
    sinks: Sequence[Sink] | None = None,
    store: Store | str | None = "configured",
    learners: dict[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    crash: CrashPoints | None = None,
    version: str = "unknown",
    probe_interval_s: float = 2.0,
    config_path: Path | None = None,
) -> Daemon:
    """The daemon for ``config``; every keyword replaces the piece it names."""
    plans = plan(config)
    k = config.kafka
    io = ThreadPoolExecutor(2, thread_name_prefix="driftline-io")
    if learners is None:
        learners = build_learners(plans)
    pipeline = Pipeline(
        plans,
        learners=learners,
        max_record_bytes=k.max_record_bytes,
        max_future_s=config.events.max_future_s,
    )
    if sinks is None:
        sinks = build_sinks(config)
    if dead_letters is None:
        dead_letters = (
            NoDeadLetters()
            if k.dead_letter_topic is None
            else KafkaDeadLetters(k, k.dead_letter_topic)
        )
    supervised: list[Any] = [SupervisedSink(s) for s in sinks if isinstance(s, Outbox)]
    supervised += [_SupervisedLearner(m, lrn) for m, lrn in learners.items()]
    parts = Parts(
        config=config,
        pipeline=pipeline,
        source=source if source is not None else KafkaSource(k),
        dead_letters=dead_letters,
        sinks=sinks,
        store=build_store(config, io) if store == "configured" else store,  # type: ignore[arg-type]
        learners=learners,
        supervised=supervised,
        registry=registry,
        io=io,
        crash=crash,
        version=version,
        probe_interval_s=probe_interval_s,
        memory_only=config.state.memory_only,
        config_path=config_path,
        make_sink=make_sink,
        supervise_sink=lambda s: SupervisedSink(s) if isinstance(s, Outbox) else None,
    )
    return Daemon(parts)
