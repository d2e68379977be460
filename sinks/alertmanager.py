"""Alertmanager sink: pushes alerts to Alertmanager's v2 API, ``POST {url}/api/v2/alerts``.

Each episode becomes one Alertmanager alert:

* labels: ``alertname`` (``DriftlineFeatureDrift``, ``DriftlineModelDrift`` or
  ``DriftlineConceptDrift``), ``model``, ``feature`` (when there is one), ``detector``,
  ``severity`` and ``alert_id`` (the episode's id, so two episodes of one series are two
  alerts);
* annotations: ``summary``, ``score``, ``threshold``, ``p_value``, the drifting features
  of a model-level alert, and on resolve its ``resolution`` (``quiet``, ``rebaselined``);
* ``startsAt`` the episode's start; on resolve ``endsAt`` its end.

Alertmanager resolves an alert by itself when it is not re-sent within its
``resolve_timeout``, as Prometheus re-sends: this sink re-sends every firing alert every
``resend_interval_s`` (60 s by default) until it resolves. The firing set is kept in
``<directory>/<sink>.firing.json`` so the re-sending goes on after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import AnyHttpUrl, Field

from .base import AlertLike, DeliveryError, SinkStats
from .config import SinkCommon, SinkContext
from .http import post

log = logging.getLogger("driftline.sinks.alertmanager")

ALERTNAMES = {
    "concept_drift": "DriftlineConceptDrift",
    "multiple": "DriftlineModelDrift",
}


def to_alertmanager(alert: dict[str, Any]) -> dict[str, Any]:
    """One driftline alert in Alertmanager's v2 ``postableAlert`` shape.

    >>> a = to_alertmanager({"id": "dl-1", "status": "resolved", "model": "m",
    ...     "feature": "x", "detector": "ks", "severity": "warning", "score": 0.2,
    ...     "threshold": 0.1, "p_value": 1e-9, "summary": "x drifted",
    ...     "started_at": "2026-11-27T00:00:00Z", "ended_at": "2026-11-27T01:00:00Z"})
    >>> a["labels"]["alertname"], a["endsAt"]
    ('DriftlineFeatureDrift', '2026-11-27T01:00:00Z')
    """
    detector = str(alert["detector"])
    labels = {
        "alertname": ALERTNAMES.get(detector, "DriftlineFeatureDrift"),
        "model": str(alert["model"]),
        "detector": detector,
        "severity": str(alert.get("severity") or "warning"),
        "alert_id": str(alert["id"]),
    }
    if alert.get("feature"):
        labels["feature"] = str(alert["feature"])
    annotations = {"summary": str(alert.get("summary") or f"drift on {alert['model']}")}
    for key in ("score", "threshold", "p_value", "error_before", "error_after"):
        if alert.get(key) is not None:
            annotations[key] = f"{alert[key]:.6g}"
    if alert.get("features"):
        annotations["features"] = ", ".join(alert["features"])
    if alert.get("resolution"):
        annotations["resolution"] = str(alert["resolution"])  # "quiet" or "rebaselined"
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert["started_at"],
    }
    if alert["status"] == "resolved" and alert.get("ended_at"):
        out["endsAt"] = alert["ended_at"]
    return out


class AlertmanagerSink:
    """See the module doc."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        directory: Path | None = None,
        resend_interval_s: float = 60.0,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        sleep: Any = asyncio.sleep,
    ) -> None:
        self.name = name
        self._sleep = sleep
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.resend_interval_s = resend_interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.path = None if directory is None else Path(directory) / f"{name}.firing.json"
        self.firing: dict[str, dict[str, Any]] = {}  # alert id -> Alertmanager alert
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stats = SinkStats()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        if self.path is not None and self.path.exists() and not self.firing:
            try:
                self.firing = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                log.error(
                    "cannot read %s (%s): the firing alerts are re-sent once they fire again",
                    self.path,
                    exc,
                )
        if self._task is None:
            self._task = asyncio.create_task(self._resend(), name=f"resend-{self.name}")

    async def _post(self, alerts: list[dict[str, Any]]) -> None:
        if self._session is None:
            await self.start()
        assert self._session is not None
        await post(self._session, self.endpoint, orjson.dumps(alerts), self.headers, "alertmanager")

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if not alerts:
            return
        dicts = [a.to_dict() for a in alerts]
        await self._post([to_alertmanager(d) for d in dicts])
        for d in dicts:
            if d["status"] == "firing":
                self.firing[str(d["id"])] = to_alertmanager(d)
            else:
                self.firing.pop(str(d["id"]), None)
        self._save()

    def _save(self) -> None:
        """Keep the firing set for the next start (atomically, fsynced)."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with tmp.open("wb") as fh:
                fh.write(orjson.dumps(self.firing))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save the firing alerts to %s (%s)", self.path, exc)

    async def _resend(self) -> None:
        while True:
            await self._sleep(self.resend_interval_s)
            if not self.firing:
                continue
            try:
                await self._post(list(self.firing.values()))
            except DeliveryError as exc:
                self._stats.failures[exc.reason] += 1
                log.warning("re-sending %d firing alert(s) failed: %s", len(self.firing), exc)
            except Exception:  # never let the re-sending stop for good
                self._stats.failures["other"] += 1
                log.exception("re-sending %d firing alert(s) crashed", len(self.firing))

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> SinkStats:
        return self._stats


class AlertmanagerConfig(SinkCommon):
    type: Literal["alertmanager"]
    url: AnyHttpUrl
    resend_interval_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


def build(config: AlertmanagerConfig, ctx: SinkContext) -> AlertmanagerSink:
    return AlertmanagerSink(
        str(config.url),
        name=ctx.name,
        directory=ctx.directory,
        resend_interval_s=config.resend_interval_s,
        timeout_s=config.timeout_s,
        headers=config.headers,
    )
