"""`smscool worker`: the Faust worker with the cooldown agent, and its ingest child.

The worker starts ingest (`python -m streams.ingest`) as a child process and keeps
it running: restarted when it exits on its own, stopped when the worker stops, and
killed by the kernel if the worker itself is killed. One command for an operator;
several workers share the load through two consumer groups (`<app id>` for the
bundles, `<app id>-ingest` for the inputs).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from streams import faust_patches, metrics, topics
from streams.agents import Pipeline, build_pipeline
from streams.app import build_app
from streams.automations import Catalog, CatalogFollower, longest_cooldown_ms
from streams.broker import is_embedded
from streams.ingest import INPUTS
from streams.kafka import PartitionMismatch, ensure_topics, partition_counts
from streams.outputs import KafkaOutputs
from streams.settings import Settings

log = logging.getLogger(__name__)

RESTART_DELAY_S = (1.0, 2.0, 5.0, 10.0)
STOP_TIMEOUT_S = 15.0


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: a SIGKILLed worker must not leave its
    # ingest running (Linux's PR_SET_PDEATHSIG; elsewhere the child outlives a kill).
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class IngestSupervisor:
    """Keeps the ingest child running until its task is cancelled (the worker stops)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._child: asyncio.subprocess.Process | None = None
        self._env = env  # the child's environment; None: the worker's

    def running(self) -> bool:
        return self._child is not None and self._child.returncode is None

    async def run(self) -> None:
        restarts = 0
        try:
            while True:
                self._child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streams.ingest", preexec_fn=_die_with_parent,
                    env=self._env)
                log.info("ingest started (pid %d)", self._child.pid)
                code = await self._child.wait()
                delay = RESTART_DELAY_S[min(restarts, len(RESTART_DELAY_S) - 1)]
                log.error("ingest exited with %s; restarting it in %.0f s", code, delay)
                restarts += 1
                await asyncio.sleep(delay)
        finally:
            await self._stop_child()

    async def _stop_child(self) -> None:
        child = self._child
        if child is None or child.returncode is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            # Ingest finishes its batch, waits for its acknowledgements and commits.
            await asyncio.wait_for(asyncio.shield(child.wait()), STOP_TIMEOUT_S)
        except TimeoutError:
            child.kill()
            await child.wait()


def _retention_horizon(settings: Settings, bootstrap: str
                       ) -> tuple[Callable[[], int | None], threading.Event]:
    """How old a number's last SMS may get before its state goes: the longest cooldown
    of any automation, and the margin. The catalog is followed as it changes; until it
    is loaded (in a thread: it may take a while; the event says when), None."""
    catalog = Catalog()
    follower = CatalogFollower(catalog, bootstrap)
    loaded = threading.Event()

    def load() -> None:
        try:
            follower.load()
            loaded.set()
        except Exception as exc:  # the sweep stays off; the worker runs on
            log.error("retention: the automation catalog did not load (%s); no state "
                      "is forgotten until the worker restarts", exc)

    threading.Thread(target=load, name="retention-catalog", daemon=True).start()

    def horizon() -> int | None:
        if not loaded.is_set():
            return None
        follower.poll()
        return longest_cooldown_ms(catalog) + settings.retention_margin_ms

    return horizon, loaded


class WorkerGauges:
    """What the worker's /metrics measures at each scrape: per bundle partition of this
    worker, the table's keys, the held messages and the lag of the bundles."""

    # Counting held messages reads the release index: with many held, a scrape every
    # few seconds would hold the event loop for long, so past this many they are
    # counted at most every HELD_EVERY_S.
    HELD_COUNTED_EACH_SCRAPE = 100_000
    HELD_EVERY_S = 15.0

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline
        self.lag: dict[int, int] = {}
        self._held: dict[int, int] = {}
        self._held_at = -self.HELD_EVERY_S

    def assigned(self) -> list[int]:
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == topics.BY_NUMBER)

    async def measure(self) -> None:
        lag = {}
        for tp in self.app.consumer.assignment():
            if tp.topic != topics.BY_NUMBER:
                continue
            end = self.app.consumer.highwater(tp)
            decided = self.pipeline.decided_offsets.get(tp.partition)
            read = decided + 1 if decided is not None else await self.app.consumer.position(tp)
            if end is not None and read is not None:
                lag[tp.partition] = max(0, end - read)
        self.lag = lag

    def collect(self) -> list[Metric]:
        states = self.pipeline.states
        partitions = [p for p in self.assigned() if states.open(p)]
        if sum(self._held.values()) < self.HELD_COUNTED_EACH_SCRAPE \
                or time.monotonic() - self._held_at >= self.HELD_EVERY_S:
            self._held = {p: states.held_count(p) for p in partitions}
            self._held_at = time.monotonic()
        keys = GaugeMetricFamily("smscool_table_keys", "Keys in the cooldown table (RocksDB's "
                                 "estimate: numbers, held messages' index, kept opt-outs)",
                                 labels=["partition"])
        held = GaugeMetricFamily("smscool_held_messages", "Messages held for a later release",
                                 labels=["partition"])
        lag = GaugeMetricFamily("smscool_consumer_lag", metrics.LAG_HELP,
                                labels=["group", "topic", "partition"])
        for partition in partitions:
            keys.add_metric([str(partition)], states.size(partition))
            if partition in self._held:
                held.add_metric([str(partition)], self._held[partition])
        for partition, behind in sorted(self.lag.items()):
            lag.add_metric([self.app.conf.id, topics.BY_NUMBER, str(partition)], behind)
        return [keys, held, lag]

    def readiness(self, catalog_loaded: threading.Event,
                  supervisor: IngestSupervisor) -> tuple[bool, dict[str, Any]]:
        """Ready: the catalog loaded, a settled assignment, the table recovered."""
        recovery = getattr(self.app.tables, "recovery", None)
        recovered = bool(recovery is not None and recovery.completed.is_set()
                         and not self.app.in_recovery)
        rebalancing = bool(self.app.rebalancing)
        facts = {"catalog_loaded": catalog_loaded.is_set(), "partitions": self.assigned(),
                 "table_recovered": recovered, "rebalancing": rebalancing,
                 "ingest_running": supervisor.running()}
        return catalog_loaded.is_set() and recovered and not rebalancing, facts


async def serve_metrics(settings: Settings, gauges: WorkerGauges,
                        ready: metrics.Readiness, ingest_socket: str) -> None:
    """The worker's /metrics (its ingest child's merged in), /healthz and /readyz, until
    the task is cancelled."""
    if not settings.metrics_enabled:
        return
    metrics.WORKER.register(gauges)  # type: ignore[arg-type]
    port = metrics.WORKER_PORT if settings.metrics_port is None else settings.metrics_port
    app = metrics.metrics_app(metrics.WORKER, ready,
                              extra=lambda: metrics.fetch_unix(ingest_socket),
                              before_scrape=gauges.measure)
    runner = await metrics.serve(app, settings.metrics_host, port, "worker")
    if runner is None:
        return
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run(settings: Settings) -> int:
    bootstrap = settings.require_bootstrap()
    try:
        ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
    except PartitionMismatch as exc:
        print(f"smscool worker: refusing to start: {exc}", file=sys.stderr)
        return 2
    faust_patches.install(bootstrap, settings.fetch_wait_ms, is_embedded(bootstrap))
    app = build_app(settings)
    outputs = KafkaOutputs(bootstrap, settings.linger_ms,
                           offsets_of=topics.changelog_topic(settings.app_id))
    counts = partition_counts(bootstrap)
    inputs = frozenset((topic, partition) for topic in INPUTS
                       for partition in range(counts[topic]))
    horizon, catalog_loaded = _retention_horizon(settings, bootstrap)
    pipeline = build_pipeline(app, settings, outputs=outputs, inputs=inputs,
                              retention_horizon=horizon)

    async def flush_outputs() -> None:
        await outputs.flush()
        # Every changelog record is acknowledged now: the states may go to the stores.
        pipeline.states.persist()

    faust_patches.flush_before_commit(app, flush_outputs)
    # The ingest child serves its metrics there; the worker's /metrics shows them.
    ingest_socket = metrics.ingest_socket(os.getpid())
    supervisor = IngestSupervisor({**os.environ, metrics.INGEST_SOCKET_ENV: ingest_socket})
    gauges = WorkerGauges(app, pipeline)

    @app.task
    async def ingest() -> None:
        await supervisor.run()

    @app.task
    async def worker_metrics() -> None:
        await serve_metrics(settings, gauges,
                            lambda: gauges.readiness(catalog_loaded, supervisor), ingest_socket)

    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
    return 0
