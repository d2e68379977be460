"""One HTTP POST as the HTTP sinks (webhook, Alertmanager) make it, with the outcome
classified the same way for all: 2xx delivered; 408, 429, 5xx, timeouts and connection
errors retryable (``Retry-After`` in seconds honoured); any other status refused for good.
Errors name the receiver by its redacted URL only."""

from __future__ import annotations

import aiohttp

from .base import DeliveryError, redact_url

RETRYABLE_4XX = frozenset({408, 429})


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], what: str
) -> None:
    """POST ``body``; return on 2xx, else raise DeliveryError."""
    where = f"{what} {redact_url(url)}"
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if 200 <= resp.status < 300:
                return
            text = (await resp.text())[:200]
            retry_after = retry_after_s(resp.headers.get("Retry-After"))
    except TimeoutError:
        raise DeliveryError("timeout", f"{where}: timed out", retryable=True) from None
    except aiohttp.ClientError as exc:
        # The exception's text may hold the full URL: only its type is shown.
        raise DeliveryError(
            "connection", f"{where}: {type(exc).__name__}", retryable=True
        ) from None
    raise DeliveryError(
        "http_5xx" if resp.status >= 500 else "http_4xx",
        f"{where}: HTTP {resp.status} {text!r}",
        retryable=resp.status >= 500 or resp.status in RETRYABLE_4XX,
        retry_after=retry_after,
    )


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds, capped at 300 (HTTP dates are not honoured).

    >>> retry_after_s("12"), retry_after_s("soon"), retry_after_s(None)
    (12.0, None, None)
    """
    if value is None:
        return None
    try:
        return max(0.0, min(300.0, float(value)))
    except ValueError:
        return None
