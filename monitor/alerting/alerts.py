"""What sinks receive: a frozen :class:`Alert`, made in one place (:func:`make_alert`).

An alert is one state of an episode (``firing``, an escalation to ``critical``, or
``resolved``). Every field comes from the stream itself (the detecting check's evidence,
the events' timestamps, event counts), never from the wall clock or from whatever state
the detectors are in when the alert is built, so the same stream gives the same alerts,
field for field, however it is batched and across restores.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

from monitor.ingest.timestamps import iso

MODEL_LEVEL = "multiple"
CONCEPT = "concept_drift"


def alert_id(model: str, feature: str | None, detector: str, start_event: int) -> str:
    """Deterministic id of an episode.

    >>> alert_id("credit-v1", "salary", "ks", 10099)
    'dl-1e40a4295b951af6'
    """
    key = f"{model}\x1f{feature or ''}\x1f{detector}\x1f{start_event}".encode()
    return "dl-" + hashlib.sha256(key).hexdigest()[:16]


def when(ts: float) -> str | None:
    """An event time as RFC 3339, or None when the event had none."""
    return iso(ts) if math.isfinite(ts) else None


@dataclass(frozen=True)
class Evidence:
    """What a detecting check saw: its statistic, the threshold it crossed, its p-value
    (None where the detector has none), the window it tested and the reference size."""

    score: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    window_size: int | None = None
    reference_size: int | None = None


NO_EVIDENCE = Evidence()


@dataclass(frozen=True)
class Alert:
    """One state of an episode; ``id`` is the episode's, stable from firing to resolved."""

    id: str
    status: str  # "firing" | "resolved"
    model: str
    feature: str | None
    detector: str
    severity: str  # "warning" | "critical"
    score: float | None
    threshold: float | None
    p_value: float | None
    started_at: str | None
    ended_at: str | None
    start_event: int
    at_event: int  # the model's event (or labelled pair) at which this status took effect
    window_size: int | None = None
    reference_size: int | None = None
    reference_summary: dict[str, Any] | None = None
    current_summary: dict[str, Any] | None = None
    features: tuple[str, ...] | None = None  # model-level alerts: the drifting features
    error_before: float | None = None  # concept drift: the model's error rate before
    error_after: float | None = None  # ... and after the estimated change
    change_at: int | None = None  # concept drift: the labelled pair where it changed
    adaptation: str | None = None  # concept drift: what the online learner did
    resolution: str | None = None  # resolved alerts: why ("quiet" or "rebaselined")
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("score", "threshold", "p_value", "error_before", "error_after"):
            v = out[k]
            if v is not None and not math.isfinite(v):
                out[k] = None
        if out["features"] is not None:
            out["features"] = list(out["features"])
        return out


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def make_alert(
    *,
    episode_id: str,
    status: str,
    model: str,
    feature: str | None,
    detector: str,
    severity: str,
    started_at: str | None,
    start_event: int,
    at_event: int,
    ended_at: str | None = None,
    evidence: Evidence = NO_EVIDENCE,
    reference_summary: dict[str, Any] | None = None,
    current_summary: dict[str, Any] | None = None,
    summary: str = "",
    **extra: Any,
) -> Alert:
    """The one place an :class:`Alert` is built (NaN and infinities become None)."""
    return Alert(
        id=episode_id,
        status=status,
        model=model,
        feature=feature,
        detector=detector,
        severity=severity,
        score=_num(evidence.score),
        threshold=_num(evidence.threshold),
        p_value=_num(evidence.p_value),
        started_at=started_at,
        ended_at=ended_at if status == "resolved" else None,
        start_event=start_event,
        at_event=at_event,
        window_size=evidence.window_size,
        reference_size=evidence.reference_size,
        reference_summary=reference_summary,
        current_summary=current_summary,
        summary=summary,
        **extra,
    )
