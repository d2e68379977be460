"""driftline's errors and the one classification of every external failure.

Every failure of something outside the process (the broker, the checkpoint store, a
receiver, a disk, a child process) is classified once, by :func:`classify`:

* **transient**: retried with backoff (:mod:`monitor.backoff`), visible in the logs, the
  metrics and ``/status`` while it lasts; monitoring goes on where it can;
* **fatal**: retrying cannot help (the broker refused our credentials, a topic we may not
  read); the daemon stops with a message naming what to fix and the exit status
  :data:`EXIT_CONFIG` (2) or :data:`EXIT_FAILURE` (1).

Kafka errors are fatal only when they name credentials or permissions (aiokafka's
``retriable = False`` also covers errors that the next attempt clears, such as a commit
overtaken by a rebalance); other errors follow their ``retriable`` attribute, as on
:class:`DriftlineError` and on the sinks' ``DeliveryError``.

>>> from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
>>> classify(KafkaConnectionError()).transient
True
>>> classify(SaslAuthenticationFailed()).exit_code
2
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import errors as kafka_errors

EXIT_OK = 0
EXIT_FAILURE = 1  # a fault the daemon cannot work around: a supervisor restarts it
EXIT_CONFIG = 2  # bad usage or configuration (credentials and permissions included)


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


class CheckpointError(DriftlineError):
    """A checkpoint that cannot be used (corrupt, another format, another configuration);
    the message says why. Not retriable: the same bytes will not get better."""


class StoreError(DriftlineError):
    """The checkpoint store could not be read or written this time."""

    retriable = True


class FatalError(DriftlineError):
    """Stop the daemon: ``message`` says what to fix; ``exit_code`` is 1 or 2."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Fault:
    """What a failure means: retry it, or stop with ``exit_code`` and ``advice``."""

    transient: bool
    exit_code: int = EXIT_FAILURE
    advice: str = ""


_AUTH = tuple(
    getattr(kafka_errors, name)
    for name in (
        "AuthenticationFailedError",
        "SaslAuthenticationFailed",
        "TopicAuthorizationFailedError",
        "GroupAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailed",
    )
    if hasattr(kafka_errors, name)
)


def classify(exc: BaseException) -> Fault:
    """Transient or fatal, for any exception met at a boundary."""
    if isinstance(exc, FatalError):
        return Fault(False, exc.exit_code, str(exc))
    if isinstance(exc, _AUTH):
        return Fault(
            False,
            EXIT_CONFIG,
            f"Kafka refused this client ({type(exc).__name__}): check kafka.security_protocol, "
            "the SASL/TLS settings and the ACLs for the topics and the group",
        )
    if isinstance(exc, kafka_errors.KafkaError):
        # aiokafka also marks errors not retriable that the next attempt clears (a commit
        # overtaken by a rebalance, an offset out of range that is then reset): only what
        # names a credentials or permission problem is fatal; the rest are retried, loudly.
        return Fault(True)
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return Fault(True)
    retriable = getattr(exc, "retriable", None)
    if retriable is not None:
        return Fault(bool(retriable), EXIT_FAILURE, str(exc))
    return Fault(False, EXIT_FAILURE, f"{type(exc).__name__}: {exc}")


def describe(exc: BaseException) -> str:
    """One line for logs and ``/status``: the type and the message (never a traceback).

    >>> describe(OSError(28, "No space left on device"))
    'OSError: [Errno 28] No space left on device'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
