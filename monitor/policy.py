"""The alert policy: detector signals in, alert episodes out.

Per (model, feature, detector) key:

* **firing** on a detection while the key is quiet (and out of its cooldown);
* it stays firing while detections keep coming; it is **resolved** once
  ``resolve_after_events`` events of the model have passed with no detection;
* after a resolve, the key cannot fire again for ``cooldown_events`` events (no storm of
  episodes from a detector hovering at its threshold);
* **severity** is ``critical`` when ``score / threshold >= critical_ratio`` at the firing
  check, else ``warning``; an episode that becomes critical is re-sent once as critical
  (same id).

A **model-level** alert (``feature: null``, ``detector: "multiple"``) fires when at least
``model_alert_min_features`` features are firing at once and resolves when fewer are.

All periods count the model's events, and everything is processed in event order, so the
same stream gives the same alerts, with the same ids, however it is cut into batches.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .bank import Detection, ModelMonitor
from .config import AlertingConfig
from .labels import ConceptDrift, Performance

MODEL_LEVEL = "multiple"
CONCEPT = "concept_drift"


def alert_id(model: str, feature: str | None, detector: str, start_event: int) -> str:
    """Deterministic id of an episode.

    >>> alert_id("credit-v1", "salary", "ks", 10099)
    'dl-1e40a4295b951af6'
    """
    key = f"{model}\x1f{feature or ''}\x1f{detector}\x1f{start_event}".encode()
    return "dl-" + hashlib.sha256(key).hexdigest()[:16]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Alert:
    """What sinks receive. ``id`` is stable for one episode (firing and resolved)."""

    id: str
    status: str  # "firing" | "resolved"
    model: str
    feature: str | None
    detector: str
    severity: str  # "warning" | "critical"
    score: float | None
    threshold: float | None
    p_value: float | None
    started_at: str
    ended_at: str | None
    start_event: int
    at_event: int  # the model's event index at which this status took effect
    window_size: int | None = None
    reference_size: int | None = None
    reference_summary: dict[str, Any] | None = None
    current_summary: dict[str, Any] | None = None
    features: list[str] | None = None  # model-level alerts: the drifting features
    error_before: float | None = None  # concept drift: the model's error rate before
    error_after: float | None = None  # ... and after the estimated change
    change_at: int | None = None  # concept drift: the labelled pair where it changed
    adaptation: str | None = None  # concept drift: what the online learner did
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("score", "threshold", "p_value", "error_before", "error_after"):
            v = out[k]
            if v is not None and not math.isfinite(v):
                out[k] = None
        return out


@dataclass
class _Episode:
    id: str
    start_event: int
    started_at: str
    last_signal: int
    severity: str


@dataclass
class _KeyState:
    episode: _Episode | None = None
    quiet_until: int = -1  # cooldown: no new episode before this event


@dataclass
class ModelAlerts:
    keys: dict[tuple[str, str], _KeyState] = field(default_factory=dict)
    concept: _KeyState = field(default_factory=_KeyState)  # counted in labelled pairs
    model_episode: _Episode | None = None
    fired_total: dict[tuple[str, str], int] = field(default_factory=dict)  # (detector, severity)


class AlertPolicy:
    """Turns each model's detections into alert episodes. One instance for all models."""

    def __init__(self, config: AlertingConfig, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.models: dict[str, ModelAlerts] = {}

    def state(self, model: str) -> ModelAlerts:
        return self.models.setdefault(model, ModelAlerts())

    def active(self, model: str, feature: str, detector: str) -> bool:
        st = self.state(model).keys.get((feature, detector))
        return st is not None and st.episode is not None

    def concept(
        self,
        mon: ModelMonitor,
        perf: Performance,
        drifts: list[ConceptDrift],
        adaptation: str | None = None,
    ) -> list[Alert]:
        """Concept-drift episodes (``detector: "concept_drift"``, ``feature: null``), from
        ADWIN on the production model's errors; periods count labelled pairs."""
        st = self.state(mon.model).concept
        wait = self.config.resolve_after_events
        out: list[Alert] = []

        def resolve_before(index: int, ts: float) -> None:
            ep = st.episode
            if ep is not None and ep.last_signal + wait < index:
                st.episode = None
                st.quiet_until = ep.last_signal + wait + self.config.cooldown_events
                out.append(
                    self._concept_alert(mon, ep, "resolved", ep.last_signal + wait, None, ts)
                )

        for d in drifts:
            resolve_before(d.index, d.ts)
            if st.episode is not None:
                st.episode.last_signal = d.index
                continue
            if d.index < st.quiet_until:
                continue
            before, after = d.error_before, d.error_after
            worse = math.isfinite(after) and math.isfinite(before) and after > before
            severity = (
                "critical"
                if worse and after >= self.config.critical_ratio * max(before, 1e-9)
                else "warning"
            )
            ep = _Episode(
                alert_id(mon.model, None, CONCEPT, d.index),
                d.index,
                self._when(d.ts),
                d.index,
                severity,
            )
            st.episode = ep
            totals = self.state(mon.model).fired_total
            totals[(CONCEPT, severity)] = totals.get((CONCEPT, severity), 0) + 1
            alert = self._concept_alert(mon, ep, "firing", d.index, d, d.ts)
            alert.adaptation = adaptation
            out.append(alert)
        resolve_before(perf.n, math.nan)
        return out

    def _concept_alert(
        self,
        mon: ModelMonitor,
        ep: _Episode,
        status: str,
        at: int,
        d: ConceptDrift | None,
        ts: float,
    ) -> Alert:
        if d is not None:
            text = (
                f"{mon.model}: concept drift, error rate {d.error_before:.3g} -> "
                f"{d.error_after:.3g} (change at labelled pair {d.change_at})"
            )
        else:
            text = f"{mon.model}: concept drift resolved"
        return Alert(
            id=ep.id,
            status=status,
            model=mon.model,
            feature=None,
            detector=CONCEPT,
            severity=ep.severity,
            score=d.error_after if d else None,
            threshold=d.error_before if d else None,
            p_value=None,
            started_at=ep.started_at,
            ended_at=self._when(ts) if status == "resolved" else None,
            start_event=ep.start_event,
            at_event=at,
            error_before=d.error_before if d else None,
            error_after=d.error_after if d else None,
            change_at=d.change_at if d else None,
            summary=text,
        )

    def concept_active(self, model: str) -> bool:
        return self.state(model).concept.episode is not None

    def firing(self) -> list[tuple[str, str | None, str, str]]:
        """Every firing episode: (model, feature, detector, id)."""
        out: list[tuple[str, str | None, str, str]] = []
        for model, ma in list(self.models.items()):
            for (feature, det), st in list(ma.keys.items()):
                if st.episode is not None:
                    out.append((model, feature, det, st.episode.id))
            if ma.model_episode is not None:
                out.append((model, None, MODEL_LEVEL, ma.model_episode.id))
            if ma.concept.episode is not None:
                out.append((model, None, CONCEPT, ma.concept.episode.id))
        return out

    def _when(self, ts: float) -> str:
        return iso(ts if math.isfinite(ts) else self.clock())

    def process(
        self, mon: ModelMonitor, detections: list[Detection], first_event: int, ts: list[float]
    ) -> list[Alert]:
        """Apply the detections (sorted by event) of one model's batch whose events are
        ``first_event ..`` with timestamps ``ts`` (NaN where absent)."""
        ma = self.state(mon.model)
        alerts: list[Alert] = []

        def ts_of(event: int) -> float:
            i = event - first_event
            return ts[i] if 0 <= i < len(ts) else math.nan

        for d in detections:
            alerts += self._resolve_due(mon, ma, before=d.event, ts_of=ts_of)
            st = ma.keys.setdefault((d.feature, d.detector), _KeyState())
            if st.episode is not None:
                st.episode.last_signal = d.event
                alerts += self._maybe_escalate(mon, d, st.episode)
                continue
            if d.event < st.quiet_until:
                continue
            severity = self._severity(d)
            ep = _Episode(
                alert_id(mon.model, d.feature, d.detector, d.event),
                d.event,
                self._when(d.ts),
                d.event,
                severity,
            )
            st.episode = ep
            key = (d.detector, severity)
            ma.fired_total[key] = ma.fired_total.get(key, 0) + 1
            alerts.append(self._alert(mon, d.feature, d.detector, ep, "firing", d.event, d))
            alerts += self._model_level(mon, ma, d.event, d.ts)
        alerts += self._resolve_due(mon, ma, before=first_event + len(ts), ts_of=ts_of)
        return alerts

    def _resolve_due(
        self, mon: ModelMonitor, ma: ModelAlerts, before: int, ts_of: Callable[[int], float]
    ) -> list[Alert]:
        """Resolve every episode whose quiet period ended before event ``before``."""
        out: list[Alert] = []
        wait = self.config.resolve_after_events
        due = sorted(
            (
                (st.episode.last_signal + wait, key)
                for key, st in ma.keys.items()
                if st.episode is not None and st.episode.last_signal + wait < before
            ),
        )
        for at, (feature, det) in due:
            st = ma.keys[(feature, det)]
            ep = st.episode
            assert ep is not None
            st.episode = None
            st.quiet_until = at + self.config.cooldown_events
            out.append(self._alert(mon, feature, det, ep, "resolved", at, ended_ts=ts_of(at)))
            out += self._model_level(mon, ma, at, ts_of(at))
        return out

    def _severity(self, d: Detection) -> str:
        """Critical when the detecting statistic is ``critical_ratio`` times its threshold."""
        if not (d.threshold > 0) or not math.isfinite(d.score):
            return "warning"
        return "critical" if d.score / d.threshold >= self.config.critical_ratio else "warning"

    def _maybe_escalate(self, mon: ModelMonitor, d: Detection, ep: _Episode) -> list[Alert]:
        if ep.severity == "critical" or self._severity(d) != "critical":
            return []
        ep.severity = "critical"
        return [self._alert(mon, d.feature, d.detector, ep, "firing", d.event, d)]

    def _model_level(
        self, mon: ModelMonitor, ma: ModelAlerts, event: int, ts: float
    ) -> list[Alert]:
        drifting = sorted({f for (f, _), st in ma.keys.items() if st.episode is not None})
        enough = len(drifting) >= self.config.model_alert_min_features
        ep = ma.model_episode
        if enough and ep is None:
            ep = _Episode(
                alert_id(mon.model, None, MODEL_LEVEL, event),
                event,
                self._when(ts),
                event,
                "critical",
            )
            ma.model_episode = ep
            key = (MODEL_LEVEL, "critical")
            ma.fired_total[key] = ma.fired_total.get(key, 0) + 1
            return [self._model_alert(mon, ep, "firing", event, drifting, ts)]
        if not enough and ep is not None:
            ma.model_episode = None
            return [self._model_alert(mon, ep, "resolved", event, drifting, ts)]
        return []

    def _model_alert(
        self,
        mon: ModelMonitor,
        ep: _Episode,
        status: str,
        event: int,
        drifting: list[str],
        ts: float,
    ) -> Alert:
        n = len(drifting)
        text = (
            f"{mon.model}: {n} features drifting together ({', '.join(drifting)})"
            if status == "firing"
            else f"{mon.model}: fewer than {self.config.model_alert_min_features} features drifting"
        )
        return Alert(
            id=ep.id,
            status=status,
            model=mon.model,
            feature=None,
            detector=MODEL_LEVEL,
            severity=ep.severity,
            score=float(n),
            threshold=float(self.config.model_alert_min_features),
            p_value=None,
            started_at=ep.started_at,
            ended_at=self._when(ts) if status == "resolved" else None,
            start_event=ep.start_event,
            at_event=event,
            features=drifting,
            summary=text,
        )

    def _alert(
        self,
        mon: ModelMonitor,
        feature: str,
        detector: str,
        ep: _Episode,
        status: str,
        event: int,
        d: Detection | None = None,
        ended_ts: float | None = None,
    ) -> Alert:
        """An alert for one key; a firing alert reports the detecting check's score."""
        bank = mon.bank
        st = bank.status.get((feature, detector)) if bank else None
        score = d.score if d is not None else (st.score if st else None)
        threshold = d.threshold if d is not None else (st.threshold if st else None)
        ratio = ""
        if score is not None and threshold is not None and math.isfinite(score):
            ratio = f" (score {score:.4g}, threshold {threshold:.4g})"
        text = (
            f"{mon.model}/{feature}: {detector} drift {status}{ratio}"
            if status == "firing"
            else f"{mon.model}/{feature}: {detector} drift resolved"
        )
        return Alert(
            id=ep.id,
            status=status,
            model=mon.model,
            feature=feature,
            detector=detector,
            severity=ep.severity,
            score=score,
            threshold=threshold,
            p_value=st.p_value if st else None,
            started_at=ep.started_at,
            ended_at=self._when(ended_ts if ended_ts is not None else math.nan)
            if status == "resolved"
            else None,
            start_event=ep.start_event,
            at_event=event,
            window_size=st.window_size if st else None,
            reference_size=st.reference_size if st else None,
            reference_summary=bank.ref_summary.get(feature) if bank else None,
            current_summary=bank.current_summary(feature) if bank else None,
            summary=text,
        )
