"""Ingest: the stateless hop, as a batched loop outside Faust's stream.

It reads sms.triggers, sms.sent, sms.delivery, sms.optouts and sms.erasures in its own
consumer group (`<app id>-ingest`), so several workers share the inputs. Per batch (up to
`ingest_batch` records, or what came within the fetch wait) it decodes every record
and normalizes its number (`streams.normalize.route`), writes the decisions that need
no state and the dead letters, and writes the number events as bundles, one per
partition of the bundle topic (`streams.bundles`). It commits the batch's offsets
only once everything it wrote for the batch is acknowledged, so a crash replays the
batch and loses nothing (the cooldown agent's decisions are idempotent).

Run by the worker as a child process (`python -m streams.ingest`), which stops when
the worker does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streams import codecs, metrics, topics
from streams.automations import Catalog, CatalogFollower
from streams.bundles import EventTooLarge, by_partition, encode_bundles
from streams.metrics import count_ingest_decision, count_read
from streams.normalize import Limits, dead_letter, route
from streams.outcomes import INVALID_RECORD
from streams.outputs import KafkaOutputs
from streams.records import PROGRESS_EVENT, DecisionRecord, NumberEvent, Source
from streams.settings import Settings

log = logging.getLogger(__name__)

INPUTS = (topics.TRIGGERS, topics.SENT, topics.DELIVERY, topics.OPTOUTS, topics.ERASURES)
PROGRESS_EVERY_S = 30.0
# How long a record may take from its producer's clock to the broker: a partition read
# to its end is read up to this long ago (`Progress`).
IN_FLIGHT_MS = 500


def group_id(app_id: str) -> str:
    return f"{app_id}-ingest"


class Ingest:
    """The batch step; `outputs` is anything with send(topic, key, value, partition)."""

    def __init__(self, settings: Settings, catalog: Catalog, outputs: Any) -> None:
        self.settings = settings
        self.catalog = catalog
        self.limits = Limits(settings.max_clock_skew_ms, settings.max_trigger_age_ms,
                             settings.opt_out_after_failures)
        self.send = outputs.send
        self.records_read = 0
        self.bundles_written = 0

    def batch(self, sources: list[Source]) -> dict[tuple[str, int], int]:
        """Write what the batch's records give; returns the offsets to commit, by
        (topic, partition), once the writes are acknowledged."""
        events: list[NumberEvent] = []
        next_offsets: dict[tuple[str, int], int] = {}
        read: dict[str, int] = {}
        for source in sources:
            for output in route(source, self.catalog, self.limits):
                if output.topic == topics.BY_NUMBER:
                    events.append(output.record)  # type: ignore[arg-type]
                    continue
                if output.topic == topics.DEADLETTER:
                    log.warning("dead letter from %s[%d]@%d: %s", source.topic,
                                source.partition, source.offset,
                                output.record.reason)  # type: ignore[union-attr]
                codec = topics.CODECS[output.topic]
                self.send(output.topic, output.key, codec.encode(output.value))
                if isinstance(output.record, DecisionRecord):
                    count_ingest_decision(output.record.automation_id or "",
                                          output.record.outcome)
            next_offsets[(source.topic, source.partition)] = source.offset + 1
            read[source.topic] = read.get(source.topic, 0) + 1
        for partition, group in by_partition(events, self.settings.partitions).items():
            self._write_bundles(partition, group)
        self.records_read += len(sources)
        for topic, count in read.items():
            count_read(topic, amount=count)
        return next_offsets

    def _write_bundles(self, partition: int, events: list[NumberEvent]) -> None:
        try:
            bundles = list(encode_bundles(events, self.settings.bundle_max_bytes))
        except EventTooLarge:
            # Only an automation with absurdly long fields makes one: dead-letter it
            # alone, and bundle the rest.
            bundles = []
            for event in events:
                try:
                    bundles += encode_bundles([event], self.settings.bundle_max_bytes)
                except EventTooLarge as exc:
                    self._too_large(event, str(exc))
        for bundle in bundles:
            self.send(topics.BY_NUMBER, None, bundle, partition)
            self.bundles_written += 1

    def _too_large(self, event: NumberEvent, detail: str) -> None:
        source = Source(event.source_topic, event.source_partition, event.source_offset,
                        event.at_ms, None, None)
        log.warning("dead letter from %s[%d]@%d: %s", source.topic, source.partition,
                    source.offset, detail)
        output = dead_letter(source, event.at_ms, INVALID_RECORD, detail)
        self.send(output.topic, output.key, codecs.DEAD_LETTER.encode(output.value))

class Progress:
    """How far in time ingest has read each input partition it reads, written to every
    partition of the bundle topic after the bundles of what was read. A held message is
    released only once every input partition has been read up to its release time, so
    that an SMS or trigger dated before the release, still on its way (a backlog, a
    rebalance of ingest's group), is applied to the number first."""

    def __init__(self, settings: Settings, outputs: Any) -> None:
        self.settings = settings
        self.send = outputs.send
        self.read_up_to: dict[tuple[str, int], int] = {}
        self.last_sent = 0.0

    def fetched(self, fetched: dict[Any, list[Any]]) -> None:
        # Not at the end yet: read up to the newest record read (timestamps of one
        # partition only roughly rise, so this is an estimate on the safe side of now).
        for tp, records in fetched.items():
            if records:
                self._advance((tp.topic, tp.partition), records[-1].timestamp)

    async def report(self, source: AIOKafkaConsumer) -> None:
        if time.monotonic() - self.last_sent < self.settings.progress_tick_ms / 1000:
            return
        self.last_sent = time.monotonic()
        now = self.settings.clock.ms_ago(IN_FLIGHT_MS)
        for tp in source.assignment():
            end = source.highwater(tp)
            try:
                at_end = end is not None and await source.position(tp) >= end
            except Exception:  # taken away by a rebalance under way: not read to its end
                at_end = False
            if at_end:
                self._advance((tp.topic, tp.partition), now)
        events = [NumberEvent(PROGRESS_EVENT, "", at_ms, topic, partition, -1)
                  for (topic, partition), at_ms in sorted(self.read_up_to.items())
                  if TopicPartition(topic, partition) in source.assignment()]
        if not events:
            return
        (bundle,) = encode_bundles(events, self.settings.bundle_max_bytes)
        for partition in range(self.settings.partitions):
            self.send(topics.BY_NUMBER, None, bundle, partition)

    def _advance(self, where: tuple[str, int], at_ms: int) -> None:
        if at_ms > self.read_up_to.get(where, -1):
            self.read_up_to[where] = at_ms


def consumer(settings: Settings) -> AIOKafkaConsumer:
    # aiokafka, as Faust's own group: librdkafka's group consumer, under workers that
    # come and go every few seconds, was seen to go ten minutes without an assignment
    # on the embedded broker, while Faust's group beside it kept settling.
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id(settings.app_id),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        # The embedded broker waits this out at every join.
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        fetch_max_wait_ms=settings.ingest_fetch_wait_ms,
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )


class _LogPartitions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Says what ingest reads after each rebalance."""

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._report("revoked", revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._report("assigned", assigned)

    @staticmethod
    def _report(what: str, partitions: Any) -> None:
        log.info("ingest: %s %s", what, ", ".join(
            f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "nothing")


async def run(settings: Settings) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    catalog = Catalog()
    follower = CatalogFollower(catalog, settings.bootstrap_servers)
    # Deciding against a half-read catalog would call known automations unknown.
    follower.load()
    outputs = KafkaOutputs(settings.bootstrap_servers, settings.linger_ms,
                           config={"message.max.bytes": settings.bundle_max_bytes + 100_000})
    ingest = Ingest(settings, catalog, outputs)
    progress = Progress(settings, outputs)
    source = consumer(settings)
    source.subscribe(list(INPUTS), listener=_LogPartitions())
    await source.start()
    served = await _serve_metrics(source, group_id(settings.app_id))
    last_report = time.monotonic()
    reported = 0
    try:
        while not stopping.is_set():
            fetched = await source.getmany(timeout_ms=settings.ingest_fetch_wait_ms,
                                           max_records=settings.ingest_batch)
            follower.poll()
            if fetched:
                offsets = ingest.batch([
                    Source(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                    for records in fetched.values() for r in records])
                await outputs.flush()
                try:
                    await source.commit({TopicPartition(topic, partition): offset
                                         for (topic, partition), offset in offsets.items()})
                except (CommitFailedError, KafkaError) as exc:
                    # A rebalance took partitions away meanwhile: their new reader
                    # reads this batch again (decisions are idempotent).
                    log.info("ingest: offsets not committed (%s); they are read again", exc)
                progress.fetched(fetched)
            # After the batch's bundles are acknowledged: the word comes after them.
            await progress.report(source)
            if time.monotonic() - last_report >= PROGRESS_EVERY_S \
                    and ingest.records_read != reported:
                log.info("ingest: %d records read, %d bundles written so far",
                         ingest.records_read, ingest.bundles_written)
                last_report, reported = time.monotonic(), ingest.records_read
    finally:
        if served is not None:
            await served.cleanup()
        await outputs.flush()
        await source.stop()
        follower.close()
    return 0


async def _serve_metrics(source: AIOKafkaConsumer, group: str) -> Any:
    """Serve ingest's metrics where the worker that started it reads them, if it did."""
    path = os.environ.get(metrics.INGEST_SOCKET_ENV)
    if not path:
        return None

    async def measure_lag() -> None:
        metrics.INGEST_LAG.clear()
        for tp in source.assignment():
            end = source.highwater(tp)
            try:
                read = await source.position(tp)
            except Exception:  # taken away by a rebalance under way
                continue
            if end is not None:
                metrics.INGEST_LAG.labels(group, tp.topic, str(tp.partition)).set(
                    max(0, end - read))

    try:
        return await metrics.serve_unix(
            metrics.metrics_app(metrics.INGEST, before_scrape=measure_lag), path)
    except OSError as exc:
        log.error("ingest metrics: cannot serve them (%s); the worker shows none", exc)
        return None


def main() -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s ingest %(name)s %(message)s")
    logging.getLogger("streams.ingest").setLevel(settings.log_level)
    return asyncio.run(run(settings.with_bootstrap(settings.require_bootstrap())))


if __name__ == "__main__":
    sys.exit(main())
