"""Webhook sink: one POST per delivery, JSON, signed.

Body (``format: json``): ``{"source": "driftline", "version": 1, "alerts": [...]}``; with
``format: slack``: ``{"text": ..., "blocks": [...]}``, one readable section per alert, which
Slack's incoming webhooks (and Mattermost's, and most chat tools') accept as is.

With a ``secret``, every request carries ``X-Driftline-Timestamp`` (Unix seconds) and
``X-Driftline-Signature: v1=<hex>``, the HMAC-SHA256 under the secret of
``<timestamp>.<body>`` (the exact bytes sent). A receiver recomputes it, compares in
constant time and rejects timestamps more than a few minutes old (replays); see the README.

Status handling: 2xx delivered; 408, 429 and 5xx, timeouts and connection errors are
retryable (``Retry-After`` honoured, in seconds); any other 4xx is refused for good.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import AnyHttpUrl, Field, SecretStr

from .base import AlertLike, SinkStats
from .config import SinkCommon, SinkContext
from .http import post

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value.

    >>> sign(b"k", "1700000000", b"{}")[:11]
    'v1=c6ef4734'
    """
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookSink:
    """POSTs alerts to ``url`` (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        format: str = "json",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret.encode() if secret else None
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.format = format
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._stats = SinkStats()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)

    def body(self, alerts: Sequence[AlertLike]) -> bytes:
        dicts = [a.to_dict() for a in alerts]
        if self.format == "slack":
            return orjson.dumps(slack_message(dicts))
        return orjson.dumps(
            {"source": "driftline", "version": 1, "alerts": dicts},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    async def emit(self, alerts: Sequence[AlertLike]) -> None:
        if not alerts:
            return
        await self.start()
        assert self._session is not None
        body = self.body(alerts)
        headers = dict(self.headers)
        if self._secret is not None:
            ts = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = sign(self._secret, ts, body)
        await post(self._session, self.url, body, headers, "webhook")

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self, timeout: float = 5.0) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> SinkStats:
        return self._stats


def slack_message(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """A Slack-compatible message: a one-line ``text`` (notifications, fallbacks) and one
    markdown section per alert."""
    firing = sum(a["status"] == "firing" for a in alerts)
    text = f"driftline: {firing} firing, {len(alerts) - firing} resolved"
    blocks = []
    for a in alerts:
        icon = ":red_circle:" if a["status"] == "firing" else ":large_green_circle:"
        what = f"`{a['model']}`" + (f" / `{a['feature']}`" if a.get("feature") else "")
        lines = [f"{icon} *{a['status'].upper()}* {a.get('severity', '')} drift on {what}"]
        if a.get("summary"):
            lines.append(str(a["summary"]))
        score = a.get("score")
        if score is not None:
            lines.append(f"{a['detector']} score {score:.4g} (threshold {a.get('threshold')})")
        lines.append(f"id `{a['id']}`")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    return {"text": text, "blocks": blocks}


class WebhookConfig(SinkCommon):
    type: Literal["webhook"]
    url: AnyHttpUrl
    secret: SecretStr | None = None
    format: Literal["json", "slack"] = "json"
    timeout_s: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)


def build(config: WebhookConfig, ctx: SinkContext) -> WebhookSink:
    return WebhookSink(
        str(config.url),
        name=ctx.name,
        secret=None if config.secret is None else config.secret.get_secret_value(),
        headers=config.headers,
        timeout_s=config.timeout_s,
        format=config.format,
    )
