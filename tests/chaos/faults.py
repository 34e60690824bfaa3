"""The services of a chaos run, and the fault loop that kills and restarts them."""

from __future__ import annotations

import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from smscool.processes import ConnectorProcess, FakeGatewayProcess, WorkerProcess
from streams.broker import EmbeddedBroker

TOKEN = "chaos-token"


@dataclass
class FaultCounts:
    worker_kills: int = 0
    connector_kills: int = 0
    wiped_restarts: int = 0
    workers_added: int = 0
    workers_removed: int = 0
    broker_kills: int = 0
    outages_s: list[float] = field(default_factory=list)
    # Workers or the connector that exited without being killed, and were started again.
    exits: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.worker_kills + self.connector_kills

    @property
    def rebalances(self) -> int:
        # Each kill, restart, addition and removal of a worker changes the group.
        return 2 * self.worker_kills + self.workers_added + self.workers_removed


class Services:
    """The embedded broker's clients: workers with data folders of their own, the
    connector and the fake gateway, all started from `folder`."""

    def __init__(self, bootstrap: str, folder: Path, partitions: int,
                 env: dict[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.folder = folder
        self.env = {"SMSCOOL_PARTITIONS": str(partitions), "SMSCOOL_LOG_LEVEL": "INFO",
                    **(env or {})}
        self.workers: list[WorkerProcess] = []
        self._worker_numbers = iter(range(1, 10_000))
        self.gateway = FakeGatewayProcess(folder / "gateway.log", TOKEN)
        self.connector: ConnectorProcess | None = None

    def start(self, workers: int) -> None:
        self.gateway.start()
        for _ in range(workers):
            self.add_worker()
        self.connector = ConnectorProcess(
            self.bootstrap, self.gateway.url, TOKEN, self.folder / "connector-data",
            self.folder / "connector.log",
            {**self.env, "SMSCOOL_CONNECTOR_RATE": "5000",
             "SMSCOOL_CONNECTOR_CONCURRENCY": "32"}).start()

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until every worker has joined the group and says it is ready, so that
        the run starts from a formed group rather than from its first rebalances."""
        deadline = time.monotonic() + timeout_s
        while not all("Worker]: Ready" in w.log_path.read_text(errors="replace")
                      for w in self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready after {timeout_s} s")
            time.sleep(0.2)

    def add_worker(self) -> WorkerProcess:
        n = next(self._worker_numbers)
        worker = WorkerProcess(self.bootstrap, self.folder / f"worker-{n}",
                               self.folder / f"worker-{n}.log", self.env).start()
        self.workers.append(worker)
        return worker

    def ensure_running(self) -> None:
        for service in [*self.workers, self.connector]:
            if service is not None and not service.alive():
                service.start()

    def stop(self) -> None:
        for service in [*self.workers, self.connector, self.gateway]:
            if service is not None:
                service.stop()


class FaultLoop(threading.Thread):
    """Every 5–15 s: SIGKILL a random worker or the connector and start it again (half
    of the worker restarts without their data folder), or add or remove a worker; with
    `broker`, every fifth fault (the third, the eighth, …) is the broker's: SIGKILL and
    start again at once, except the second, an outage of 20–40 s.

    Between faults it stands in for a supervisor: a service that exited on its own is
    noted and started again."""

    def __init__(self, services: Services, rng: random.Random, base_workers: int,
                 broker: EmbeddedBroker | None = None) -> None:
        super().__init__(daemon=True, name="faults")
        self.services = services
        self.rng = rng
        self.base_workers = base_workers
        self.broker = broker
        self.counts = FaultCounts()
        self.actions = 0
        self._halt = threading.Event()
        self._started_at = time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def _note(self, text: str) -> None:
        self.counts.log.append(f"{time.monotonic() - self._started_at:7.1f} s  {text}")

    def run(self) -> None:
        while True:
            next_fault = time.monotonic() + self.rng.uniform(5, 15)
            while time.monotonic() < next_fault:
                if self._halt.wait(min(1.0, max(0.0, next_fault - time.monotonic()))):
                    return
                self.supervise()
            self.inject()

    def supervise(self) -> None:
        for service in [*self.services.workers, self.services.connector]:
            if service is None or service.alive() or service.process is None:
                continue
            name = service.log_path.stem
            self.counts.exits.append(f"{name} exited with {service.process.returncode}")
            self._note(f"{name} exited on its own with {service.process.returncode}; "
                       f"started again")
            service.start()

    def inject(self) -> None:
        s, c = self.services, self.counts
        self.actions += 1
        if self.broker is not None and self.actions % 5 == 3:
            broker_faults = (self.actions + 2) // 5
            if broker_faults == 2:
                outage_s = self.rng.uniform(20, 40)
                self.broker.stop()
                self._note(f"stopped the broker for {outage_s:.0f} s")
                began = time.monotonic()
                self._halt.wait(outage_s)  # cut short when the feed ends meanwhile
                c.outages_s.append(time.monotonic() - began)
            else:
                self.broker.kill()
                c.broker_kills += 1
                self._note("killed the broker")
                time.sleep(self.rng.uniform(0.2, 2.0))
            self.broker.start()
            self._note("started the broker again")
        elif self.actions % 4 == 0:
            # Every fourth fault changes the group's size instead: a worker joins, or the
            # one that joined last leaves cleanly.
            if len(s.workers) > self.base_workers:
                worker = s.workers.pop()
                worker.stop()
                c.workers_removed += 1
                self._note(f"removed {worker.data_dir.name}")
            else:
                worker = s.add_worker()
                c.workers_added += 1
                self._note(f"added {worker.data_dir.name}")
        elif self.rng.random() < 0.25:
            assert s.connector is not None
            s.connector.kill()
            c.connector_kills += 1
            self._note("killed the connector")
            time.sleep(self.rng.uniform(0.2, 2.0))
            s.connector.start()
        else:
            worker = self.rng.choice(s.workers)
            worker.kill()
            c.worker_kills += 1
            wiped = c.worker_kills % 2 == 0  # every other restart starts from nothing
            if wiped:
                shutil.rmtree(worker.data_dir, ignore_errors=True)
                c.wiped_restarts += 1
            self._note(f"killed {worker.data_dir.name}"
                       + (", data folder deleted" if wiped else ""))
            time.sleep(self.rng.uniform(0.2, 2.0))
            worker.start()
