"""The configuration resolved once, per model, into what the components need: a
:class:`ModelPlan` (series with their detectors and parameters, reference, task, online
model, label and alerting settings). Components take a plan, never the whole
configuration.

>>> from monitor.config.schema import parse_config
>>> cfg = parse_config({"kafka": {"topic": "p"},
...     "models": {"m": {"features": {"x": "numeric", "c": "categorical"}}}}, env={})
>>> p = plan(cfg)["m"]
>>> [(s.name, [d.kind for d in s.detectors]) for s in p.series]
[('x', ['cusum', 'ks', 'psi']), ('c', ['categorical', 'categorical_cusum'])]

Thresholds follow the false-alert target: each of a series' detectors may spend an equal
share of it (here the default, 0.1 per 100,000 events, shared by three).

>>> x = p.series[0]
>>> round(x.detectors[0].params.arl), round(x.detectors[1].params.alpha, 8)
(3000000, 3.333e-05)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from monitor.config.kinds import registry
from monitor.config.schema import (
    PREDICTION,
    AlertingConfig,
    Config,
    LabelsConfig,
    OnlineModelConfig,
)


@dataclass(frozen=True)
class DetectorPlan:
    kind: str  # a name of monitor.config.kinds.registry()
    params: Any  # its parameter model


@dataclass(frozen=True)
class SeriesPlan:
    name: str  # a feature, or "prediction"
    type: str  # "numeric" | "categorical"
    detectors: tuple[DetectorPlan, ...]
    fence_iqr: float | None  # outlier fences (numeric series)


@dataclass(frozen=True)
class ModelPlan:
    name: str
    series: tuple[SeriesPlan, ...]  # the features in order, then the prediction if monitored
    features: frozenset[str]  # the declared feature names
    warmup: int | None
    reference_file: Path | None
    keep_recent: int  # recent events kept for a re-baseline "from recent"
    task: str | None
    online_model: OnlineModelConfig | None
    labels: LabelsConfig
    alerting: AlertingConfig
    labels_topic: bool  # labels may come on their own topic: predictions wait for them
    max_record_bytes: int

    @property
    def numeric(self) -> list[str]:
        return [s.name for s in self.series if s.type == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [s.name for s in self.series if s.type == "categorical"]

    def fingerprint(self, legacy: bool = False) -> str:
        """A hash of what shapes the model's state (its series, their detectors and the
        parameters that shape them, its task and online model): a checkpoint of the model
        made under another one is not restored. Alerting, label-join bounds, sinks and the
        detectors' tunable parameters (thresholds) may change. ``legacy``: the hash of
        earlier versions, over every detector parameter (their checkpoints still load)."""
        kinds = registry()
        doc: dict[str, Any] = {
            "series": [
                (
                    s.name,
                    s.type,
                    [
                        (
                            d.kind,
                            d.params.model_dump() if legacy else kinds[d.kind].shaping(d.params),
                        )
                        for d in s.detectors
                    ],
                    s.fence_iqr,
                )
                for s in self.series
            ],
            "task": self.task,
            "online": None if self.online_model is None else self.online_model.model_dump(),
        }
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def plan(config: Config) -> dict[str, ModelPlan]:
    """Every configured model's plan."""
    out: dict[str, ModelPlan] = {}
    for name, m in config.models.items():
        specs = config.feature_specs(name)
        series = []
        kinds = registry()
        for feature, spec in specs.items():
            params = config.params_for(name, feature)
            names = config.detectors_for(name, feature)
            # The series' share of the target, split evenly among its detectors.
            rate = config.false_alert_rate(name) / max(1, len(names))
            series.append(
                SeriesPlan(
                    feature,
                    spec.type,
                    tuple(
                        DetectorPlan(kind, kinds[kind].calibrated(params.of(kind), rate))
                        for kind in names
                    ),
                    params.outlier_fence_iqr if spec.type == "numeric" else None,
                )
            )
        ref = config.reference_for(name)
        out[name] = ModelPlan(
            name=name,
            series=tuple(series),
            features=frozenset(f for f in specs if f != PREDICTION),
            warmup=ref.warmup,
            reference_file=ref.file,
            keep_recent=ref.keep_recent,
            task=m.task,
            online_model=m.online_model,
            labels=config.labels,
            alerting=config.alerting,
            labels_topic=config.kafka.labels_topic is not None,
            max_record_bytes=config.kafka.max_record_bytes,
        )
    return out
