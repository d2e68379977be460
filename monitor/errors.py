"""driftline's errors: one root, a ``retriable`` flag where retrying can help."""

from __future__ import annotations


class DriftlineError(Exception):
    """Root of every error driftline raises on purpose."""

    retriable = False


class ConfigError(DriftlineError):
    """A configuration file that cannot be used; ``errors`` lists every problem with its path.

    >>> str(ConfigError(["kafka.topic: field required", "http.port: must be > 0"]))
    'invalid configuration:\\n  kafka.topic: field required\\n  http.port: must be > 0'
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {e}" for e in self.errors))


class DecodeError(DriftlineError):
    """A record that cannot be used; ``reason`` is a short, bounded label (a metric label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SinkError(DriftlineError):
    """An alert sink failed; ``retriable`` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
