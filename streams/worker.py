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
import signal
import sys
import threading
from collections.abc import Callable

import faust

from streams import faust_patches, topics
from streams.agents import build_pipeline
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

    def __init__(self) -> None:
        self._child: asyncio.subprocess.Process | None = None

    async def run(self) -> None:
        restarts = 0
        try:
            while True:
                self._child = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streams.ingest", preexec_fn=_die_with_parent)
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


def _retention_horizon(settings: Settings, bootstrap: str) -> Callable[[], int | None]:
    """How old a number's last SMS may get before its state goes: the longest cooldown
    of any automation, and the margin. The catalog is followed as it changes; until it
    is loaded (in a thread: it may take a while), None."""
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

    return horizon


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
    pipeline = build_pipeline(app, settings, outputs=outputs, inputs=inputs,
                              retention_horizon=_retention_horizon(settings, bootstrap))

    async def flush_outputs() -> None:
        await outputs.flush()
        # Every changelog record is acknowledged now: the states may go to the stores.
        pipeline.states.persist()

    faust_patches.flush_before_commit(app, flush_outputs)
    supervisor = IngestSupervisor()

    @app.task
    async def ingest() -> None:
        await supervisor.run()

    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()
    return 0
