"""Event time: which ``ts`` values a record may carry, and what they become.

Every accepted ``ts`` becomes epoch seconds (a float):

* **numbers** in seconds, milliseconds, microseconds or nanoseconds since 1970, the unit
  told by the magnitude (producers in Java and Go commonly send milliseconds):

  ========================  =========  ==================================
  ``abs(ts)`` below          unit       covers
  ========================  =========  ==================================
  ``1e11``                   seconds    1970 to the year 5138
  ``1e14``                   millis     1973 to 5138
  ``1e17``                   micros     1973 to 5138
  ``1e20``                   nanos      1973 to 5138
  ========================  =========  ==================================

* **strings**: RFC 3339 / ISO 8601 with a UTC offset (``2025-11-26T12:00:00Z``,
  ``...T12:00:00.250+02:00``, a space for the ``T``, lower-case ``t`` and ``z``), or a
  number written as a string (the rules above);
* absent or ``null``: no event time (the daemon falls back to the Kafka record's timestamp).

A ``ts`` is refused (the record is rejected as ``bad_timestamp``) when it is not one of
these, lies before 1970, or lies more than ``max_future_s`` after the wall clock (a
timestamp from the far future would age every waiting prediction out of the label join).

>>> parse_ts(1764158400000, now=1764158400.0)    # milliseconds
1764158400.0
>>> parse_ts("2025-11-26t12:00:00z", now=1764158400.0)
1764158400.0
>>> try:
...     parse_ts((1.7e9 + 90_000) * 1e6, now=1.7e9)    # microseconds, a day and more ahead
... except TimestampError as exc:
...     print(exc)
2023-11-15T23:13:20Z: 90000 s ahead of the clock (max 86400)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

_UNITS = ((1e11, 1.0), (1e14, 1e-3), (1e17, 1e-6), (1e20, 1e-9))
MAX_FUTURE_S = 86_400.0


class TimestampError(ValueError):
    """A ``ts`` that cannot be used; the message says why (it becomes the dead letter's
    detail)."""


def iso(ts: float) -> str:
    """Epoch seconds as RFC 3339 in UTC (``...Z``).

    >>> iso(1764158400.25)
    '2025-11-26T12:00:00.250000Z'
    """
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def from_number(value: float) -> float:
    """Epoch seconds from a number in any of the four units."""
    if not math.isfinite(value):
        raise TimestampError(f"ts must be finite, got {value!r}")
    if value < 0:
        raise TimestampError(f"ts {value!r} lies before 1970")
    for below, scale in _UNITS:
        if value < below:
            return value if scale == 1.0 else value * scale
    raise TimestampError(f"ts {value!r} is too large for nanoseconds since 1970")


def from_string(value: str) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return from_number(number)
    if len(text) > 10 and text[10] in "tT ":
        text = text[:10] + "T" + text[11:]
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"ts {value[:64]!r} is not an RFC 3339 time or a number") from None
    if stamp.tzinfo is None:
        raise TimestampError(f"ts {value[:64]!r} has no UTC offset (add 'Z' or '+00:00')")
    seconds = stamp.timestamp()
    if seconds < 0:
        raise TimestampError(f"ts {value[:64]!r} lies before 1970")
    return seconds


def parse_ts(value: object, *, now: float, max_future_s: float | None = MAX_FUTURE_S) -> float:
    """Epoch seconds from a record's ``ts``; NaN when absent; TimestampError if unusable.

    >>> parse_ts(None, now=0.0), parse_ts("1764158400", now=1764158400.0)
    (nan, 1764158400.0)
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise TimestampError("ts must be a number or an RFC 3339 string, got a boolean")
    if isinstance(value, int | float):
        try:
            seconds = from_number(float(value))
        except OverflowError:
            raise TimestampError("ts is too large for nanoseconds since 1970") from None
    elif isinstance(value, str):
        seconds = from_string(value)
    else:
        raise TimestampError(
            f"ts must be a number or an RFC 3339 string, got {type(value).__name__}"
        )
    if max_future_s is not None and seconds > now + max_future_s:
        raise TimestampError(
            f"{iso(seconds)}: {seconds - now:.0f} s ahead of the clock (max {max_future_s:.0f})"
        )
    return seconds
