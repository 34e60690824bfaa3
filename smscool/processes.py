"""`smscool` commands in child processes, for the demo and the tests: a worker, the
gateway connector, the fake gateway. Each writes its output to a log file of its own
and runs in a session of its own, so that a SIGKILL hits it alone — and so that neither
Ctrl-C nor a SIGTERM of the parent reaches it: the parent stops its children itself,
within `stop_on_signals`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """SIGTERM or SIGINT arrived: raised wherever the main thread was, so that unwinding
    stops every child it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Stopped`. Only the first: the block
    then unwinds with both ignored, so that a second signal cannot cut a child's stop
    short and leave it running. The previous handlers come back on leaving.

    A handler's exception raised while C code runs may come out as another: confluent-kafka
    turns it into "TypeError: expected configuration property name" when the signal lands
    while it reads a client's settings. So whatever leaves the block after a signal leaves
    it as `Stopped`."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    received: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        received.append(signum)
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        yield
    except Stopped:
        raise
    except BaseException as exc:
        if received:
            raise Stopped(received[0]) from exc
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class ServiceProcess:
    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.command = command
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smscool.cli", *self.command],
                env={**os.environ, **self.env},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def logged_after(self, marker: str, timeout_s: float = 20.0) -> str:
        """What follows `marker` on the first log line that has it, once the process
        writes it; RuntimeError when it exits or takes longer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            for line in self.log_path.read_text(errors="replace").splitlines():
                if marker in line:
                    return line.split(marker, 1)[1].strip()
            time.sleep(0.05)
        raise RuntimeError(f"{self.command[0]} did not log {marker!r}:\n{self.log_tail()}")


    def metrics_url(self, timeout_s: float = 60.0) -> str:
        """Where the process serves its metrics (it logs where once it listens)."""
        return self.logged_after(" metrics listening: ", timeout_s)


class WorkerProcess(ServiceProcess):
    """`smscool worker` with its own data folder, its metrics on a free port."""

    def __init__(self, bootstrap: str, data_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        super().__init__(["worker"], log_path, {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SMSCOOL_DATA_DIR": str(data_dir),
            # Several run on one machine: each its own metrics port.
            "SMSCOOL_METRICS_PORT": "0", **(extra_env or {})})


class ConnectorProcess(ServiceProcess):
    """`smscool connector` sending through the GatewayAPI adapter to `gateway_url`;
    with SMSCOOL_REPLY_PORT in `extra_env`, `reply_url` is its incoming-SMS webhook
    once started."""

    def __init__(self, bootstrap: str, gateway_url: str, token: str, data_dir: Path,
                 log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        super().__init__(["connector", "--gateway", "gatewayapi"], log_path, {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SMSCOOL_CONNECTOR_DATA_DIR": str(data_dir),
            "SMSCOOL_GATEWAYAPI_URL": gateway_url, "SMSCOOL_GATEWAYAPI_TOKEN": token,
            "SMSCOOL_METRICS_PORT": "0", **(extra_env or {})})
        self.reply_url = ""

    def start(self) -> ConnectorProcess:
        super().start()
        if "SMSCOOL_REPLY_PORT" in self.env:
            self.reply_url = self.logged_after("replies webhook listening: ", 60)
        return self


class FakeGatewayProcess(ServiceProcess):
    """`smscool fake-gateway` on a free loopback port; `url` once started."""

    def __init__(self, log_path: Path, token: str, faults: dict[str, float] | None = None,
                 seed: int = 1) -> None:
        args = ["fake-gateway", "--port", "0", "--token", token, "--seed", str(seed)]
        for name, value in (faults or {}).items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        super().__init__(args, log_path, {})
        self.url = ""

    def start(self, timeout_s: float = 20.0) -> FakeGatewayProcess:
        super().start()
        self.url = self.logged_after("listening: ", timeout_s)
        return self

    def recorded(self, what: str) -> list[dict]:
        """What the fake gateway noted: "requests" (every HTTP request) or "accepted"."""
        with urllib.request.urlopen(f"{self.url}/_fake/{what}", timeout=10) as answer:
            return json.loads(answer.read())

    def reply(self, msisdn: str, message: str, webhook: str) -> dict:
        """A phone's reply, posted to `webhook` as the gateway posts an incoming SMS;
        the webhook's status and answer."""
        request = urllib.request.Request(
            f"{self.url}/_fake/reply", method="POST",
            data=json.dumps({"msisdn": msisdn, "message": message,
                             "webhook": webhook}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())
