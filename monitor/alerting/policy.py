"""The alert policy: detections in, alerts out, through one episode state machine
(:class:`~monitor.alerting.episodes.Episodes`).

Per (model, feature, detector) key an episode **fires** on a detection while the key is
quiet and out of its cooldown, stays firing while detections keep coming, and is
**resolved** once ``resolve_after_events`` events of the model pass with no detection;
then the key cannot fire again for ``cooldown_events`` events. **Severity** is
``critical`` when ``score / threshold >= critical_ratio`` at a detecting check, else
``warning``; an episode that becomes critical is sent again as critical (same id).

A **model-level** alert (``feature: null``, ``detector: "multiple"``) fires while at least
``model_alert_min_features`` features are firing at once. **Concept drift** (``detector:
"concept_drift"``, from ADWIN on the production model's errors) follows the same rules,
counted in labelled pairs.

A firing alert carries its detecting check's evidence (:class:`~monitor.online.bank.Detection`)
and the distribution of the values up to that event; a resolved one the distribution at
its resolve point. Times are the events' own (``ts``). So the same stream gives the same
alerts, field for field and with the same ids, however it is batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from monitor.alerting.alerts import (
    CONCEPT,
    MODEL_LEVEL,
    Alert,
    Evidence,
    alert_id,
    make_alert,
    when,
)
from monitor.alerting.episodes import Episode, Episodes, episode_fields
from monitor.config.schema import AlertingConfig


class Signal(Protocol):
    """A detection as the policy needs it (see ``monitor.online.bank.Detection``)."""

    @property
    def event(self) -> int: ...
    @property
    def feature(self) -> str: ...
    @property
    def detector(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def score(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    def evidence(self) -> Evidence: ...


class ConceptDrift(Protocol):
    """A concept drift as the policy needs it (see ``monitor.online.labels.ConceptDrift``)."""

    @property
    def index(self) -> int: ...
    @property
    def ts(self) -> float: ...
    @property
    def change_at(self) -> int: ...
    @property
    def error_before(self) -> float: ...
    @property
    def error_after(self) -> float: ...


class BatchView(Protocol):
    """What the policy may know of one model's batch: its events' times and the
    distributions at any of its events (built by the detector bank)."""

    @property
    def end(self) -> int: ...  # the model's event count after the batch
    def ts_of(self, event: int) -> float: ...
    def current_summary(self, feature: str, event: int) -> dict[str, Any] | None: ...
    def reference_summary(self, feature: str) -> dict[str, Any] | None: ...


class ModelAlerts:
    """One model's alert state: its episodes and the count of episodes started."""

    def __init__(self, model: str, config: AlertingConfig) -> None:
        self.model = model
        quiet, cooldown = config.resolve_after_events, config.cooldown_events
        self.keys: Episodes[tuple[str, str]] = Episodes(
            quiet, cooldown, lambda k, at: alert_id(model, k[0], k[1], at)
        )
        self.concept: Episodes[str] = Episodes(
            quiet, cooldown, lambda _k, at: alert_id(model, None, CONCEPT, at)
        )
        self.model_episode: Episode | None = None
        self.fired_total: dict[tuple[str, str], int] = {}  # (detector, severity) -> episodes

    def retune(self, config: AlertingConfig) -> None:
        """New quiet and cooldown lengths (a reload): open episodes keep their state."""
        for episodes in (self.keys, self.concept):
            episodes.quiet, episodes.cooldown = config.resolve_after_events, config.cooldown_events

    def count(self, detector: str, severity: str) -> None:
        key = (detector, severity)
        self.fired_total[key] = self.fired_total.get(key, 0) + 1

    def firing(self) -> list[tuple[str | None, str, str]]:
        """Every firing episode as (feature, detector, id)."""
        out: list[tuple[str | None, str, str]] = [
            (f, det, ep.id) for (f, det), ep in self.keys.firing()
        ]
        if self.model_episode is not None:
            out.append((None, MODEL_LEVEL, self.model_episode.id))
        out += [(None, CONCEPT, ep.id) for _, ep in self.concept.firing()]
        return out

    def export_state(self) -> dict[str, Any]:
        m = self.model_episode
        return {
            "kind": "model_alerts",
            "version": 1,
            "keys": self.keys.export_state(),
            "concept": self.concept.export_state(),
            "model_episode": None if m is None else vars(m).copy(),
            "fired_total": list(self.fired_total.items()),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.keys.load_state(state["keys"], key=lambda k: (str(k[0]), str(k[1])))
        self.concept.load_state(state["concept"], key=str)
        m = state["model_episode"]
        self.model_episode = None if m is None else Episode(**m)
        self.fired_total = {(str(k[0]), str(k[1])): int(n) for k, n in state["fired_total"]}


class AlertPolicy:
    """Turns detections into alerts; holds no state of its own (see :class:`ModelAlerts`)."""

    def __init__(self, config: AlertingConfig) -> None:
        self.config = config

    def severity(self, score: float, threshold: float) -> str:
        """Critical when the detecting statistic is ``critical_ratio`` times its threshold."""
        if not (threshold > 0) or not math.isfinite(score):
            return "warning"
        return "critical" if score / threshold >= self.config.critical_ratio else "warning"

    # -- data drift ---------------------------------------------------------------------
    def features(
        self, state: ModelAlerts, detections: Sequence[Signal], view: BatchView
    ) -> list[Alert]:
        """Apply one model's detections of one batch (sorted by event); ``view`` tells the
        batch's times and distributions."""
        alerts: list[Alert] = []
        for d in detections:
            alerts += self._resolve(state, d.event, view)
            severity = self.severity(d.score, d.threshold)
            change = state.keys.signal(
                (d.feature, d.detector), at=d.event, severity=severity, started_at=when(d.ts)
            )
            if change is None:
                continue
            ep = change.episode
            evidence = d.evidence()
            ratio = ""
            if evidence.score is not None and evidence.threshold is not None:
                ratio = f" (score {evidence.score:.4g}, threshold {evidence.threshold:.4g})"
            alerts.append(
                make_alert(
                    **episode_fields(ep),
                    status="firing",
                    model=state.model,
                    feature=d.feature,
                    detector=d.detector,
                    at_event=d.event,
                    evidence=evidence,
                    reference_summary=view.reference_summary(d.feature),
                    current_summary=view.current_summary(d.feature, d.event),
                    summary=f"{state.model}/{d.feature}: {d.detector} drift firing{ratio}",
                )
            )
            if change.change == "fired":
                state.count(d.detector, severity)
                alerts += self._model_level(state, d.event, view.ts_of(d.event))
        alerts += self._resolve(state, view.end, view)
        return alerts

    def _resolve(self, state: ModelAlerts, before: int, view: BatchView) -> list[Alert]:
        out: list[Alert] = []
        for at, (feature, detector), ep in state.keys.resolve_due(before):
            ts = view.ts_of(at)
            out.append(
                _resolved(
                    state.model,
                    (feature, detector),
                    ep,
                    at,
                    ts,
                    "quiet",
                    f"{self.config.resolve_after_events} events without a detection",
                    reference_summary=view.reference_summary(feature),
                    current_summary=view.current_summary(feature, at),
                )
            )
            out += self._model_level(state, at, ts)
        return out

    def rebaselined(
        self,
        state: ModelAlerts,
        features: Sequence[str] | None,
        at: int,
        ts: float,
        reference_summary: Callable[[str], dict[str, Any] | None],
    ) -> list[Alert]:
        """Resolve the open episodes of the series given a new reference (all when
        ``features`` is None) at the model's event ``at``, with ``resolution
        "rebaselined"``, and the model-level episode if too few features still drift."""
        chosen = None if features is None else set(features)
        out: list[Alert] = []
        for (feature, detector), ep in state.keys.close(lambda k: chosen is None or k[0] in chosen):
            out.append(
                _resolved(
                    state.model,
                    (feature, detector),
                    ep,
                    at,
                    ts,
                    "rebaselined",
                    "re-baselined: the new distribution is the reference",
                    reference_summary=reference_summary(feature),
                )
            )
        if out:
            out += self._model_level(state, at, ts, resolution="rebaselined")
        return out

    def _model_level(
        self, state: ModelAlerts, event: int, ts: float, resolution: str = "quiet"
    ) -> list[Alert]:
        drifting = tuple(sorted({f for (f, _), _ep in state.keys.firing()}))
        need = self.config.model_alert_min_features
        ep = state.model_episode
        if len(drifting) >= need and ep is None:
            ep = Episode(
                alert_id(state.model, None, MODEL_LEVEL, event), event, when(ts), event, "critical"
            )
            state.model_episode = ep
            state.count(MODEL_LEVEL, "critical")
            status = "firing"
            text = (
                f"{state.model}: {len(drifting)} features drifting together ({', '.join(drifting)})"
            )
        elif len(drifting) < need and ep is not None:
            state.model_episode = None
            status = "resolved"
            text = f"{state.model}: fewer than {need} features drifting"
        else:
            return []
        return [
            make_alert(
                **episode_fields(ep),
                status=status,
                model=state.model,
                feature=None,
                detector=MODEL_LEVEL,
                at_event=event,
                ended_at=when(ts),
                evidence=Evidence(score=float(len(drifting)), threshold=float(need)),
                features=drifting,
                resolution=resolution if status == "resolved" else None,
                summary=text,
            )
        ]

    # -- concept drift --------------------------------------------------------------------
    def concept(
        self,
        state: ModelAlerts,
        drifts: Sequence[ConceptDrift],
        labelled: int,
        pair_ts: Callable[[int], float],
        adaptation: str | None = None,
    ) -> list[Alert]:
        """Concept-drift episodes from the drifts of one batch of labelled pairs;
        ``labelled`` is the model's count of pairs after it, ``pair_ts(i)`` the time of
        pair ``i`` of the batch."""
        out: list[Alert] = []
        for d in drifts:
            out += self._resolve_concept(state, d.index, pair_ts)
            before, after = d.error_before, d.error_after
            worse = math.isfinite(after) and math.isfinite(before) and after > before
            critical = worse and after >= self.config.critical_ratio * max(before, 1e-9)
            severity = "critical" if critical else "warning"
            change = state.concept.signal(
                CONCEPT, at=d.index, severity=severity, started_at=when(d.ts)
            )
            if change is None:
                continue
            ep = change.episode
            if change.change == "fired":
                state.count(CONCEPT, severity)
            out.append(
                make_alert(
                    **episode_fields(ep),
                    status="firing",
                    model=state.model,
                    feature=None,
                    detector=CONCEPT,
                    at_event=d.index,
                    evidence=Evidence(score=after, threshold=before),
                    error_before=before,
                    error_after=after,
                    change_at=d.change_at,
                    adaptation=adaptation,
                    summary=f"{state.model}: concept drift, error rate {before:.3g} -> "
                    f"{after:.3g} (change at labelled pair {d.change_at})",
                )
            )
        out += self._resolve_concept(state, labelled, pair_ts)
        return out

    def _resolve_concept(
        self, state: ModelAlerts, before: int, pair_ts: Callable[[int], float]
    ) -> list[Alert]:
        return [
            make_alert(
                **episode_fields(ep),
                status="resolved",
                model=state.model,
                feature=None,
                detector=CONCEPT,
                at_event=at,
                ended_at=when(pair_ts(at)),
                resolution="quiet",
                summary=f"{state.model}: concept drift resolved",
            )
            for at, _key, ep in state.concept.resolve_due(before)
        ]


def _resolved(
    model: str,
    key: tuple[str, str],
    ep: Episode,
    at: int,
    ts: float,
    resolution: str,
    why: str,
    **summaries: dict[str, Any] | None,
) -> Alert:
    """The resolved alert of a series' episode."""
    feature, detector = key
    return make_alert(
        **episode_fields(ep),
        status="resolved",
        model=model,
        feature=feature,
        detector=detector,
        at_event=at,
        ended_at=when(ts),
        resolution=resolution,
        summary=f"{model}/{feature}: {detector} drift resolved ({why})",
        **summaries,  # type: ignore[arg-type]
    )
