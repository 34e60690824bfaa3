"""Every change to Faust, and every private part of Faust the worker uses, in one place.

faust-streaming is pinned (pyproject.toml) and `install` refuses any other version:
each piece below leans on that version's internals, cites the faust-streaming issue
it works around, and is replaced on Faust's classes by `install`, which the worker
calls before it builds its app (never at import).

Consumer: Faust builds it with a fixed fetch wait; after rebuilding a table it leaves
a partition that has no committed offset wherever its fetcher got to; it goes on
delivering a batch fetched before it sought the partitions back to their committed
offsets; and its check for stalled partitions crashes the consumer when it looks at a
partition whose seek is still under way. Recovery: on the embedded broker it would
stop reading a changelog short of its end. Store: the cooldown agent reads and writes
the `last_sent` table's partitions a bundle at a time, straight in the store Faust
opened for each partition, and keeps Faust's record of how far each changelog
partition is in that store (`StoreAccess`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import faust

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"


def install(bootstrap: str, fetch_wait_ms: int, embedded: bool) -> None:
    """Put every patch in place; `embedded` when the broker is the embedded one."""
    if faust.__version__ != FAUST_VERSION:
        raise RuntimeError(
            f"sms-cooldown's worker is built on faust-streaming {FAUST_VERSION} and patches "
            f"its internals; faust-streaming {faust.__version__} is installed")
    set_fetch_wait(fetch_wait_ms)
    seek_uncommitted_to_beginning()
    stop_batches_across_a_seek()
    skip_stall_check_while_seeking()
    if embedded:
        correct_end_offsets(bootstrap)
    read_changelogs_in_batches(bootstrap)


def set_fetch_wait(ms: int) -> None:
    """Make Faust's stream consumer wait at most `ms` at the broker for records.

    Faust builds that consumer with a fixed 1,500 ms wait; a broker that answers an
    empty fetch only when the wait runs out then delays each hop by up to that much.

    No faust-streaming issue asks for this setting; the wait has been fixed in
    `AIOKafkaConsumerThread._create_worker_consumer` since before the fork.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread, "_faust_create_worker_consumer",
                     AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        # Read when the consumer starts its fetcher, so setting it here is enough.
        consumer._fetch_max_wait_ms = ms
        return consumer

    AIOKafkaConsumerThread._faust_create_worker_consumer = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def seek_uncommitted_to_beginning() -> None:
    """After a rebuild, start a stream partition with no committed offset at its beginning.

    While Faust rebuilds a table, the fetcher keeps fetching the group's input partitions
    and what it fetched for them is dropped; afterwards Faust seeks every partition to
    its committed offset, and aiokafka skips the seek when there is none. A partition
    the group has not committed yet (a new group, or one a worker took before any
    commit) then goes on after the dropped records, and they are never read — while
    the offsets after them are committed.

    Akin to faust-streaming #216 (streams resumed before the seek to committed
    offsets), which did not cover partitions without a committed offset.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    async def seek_to_committed(self: AIOKafkaConsumerThread) -> Mapping[Any, int]:
        return await self.call_thread(_seek_to_committed_or_beginning, self)

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


async def _seek_to_committed_or_beginning(thread: Any) -> Mapping[Any, int]:
    consumer = thread._ensure_consumer()
    committed = await consumer.seek_to_committed()
    # Counted for `until_seek`, which ends a batch fetched before this seek.
    thread.consumer._seeks = getattr(thread.consumer, "_seeks", 0) + 1
    # Faust keeps a table's changelog position itself, in the table's store.
    changelogs = thread.consumer.app.tables.changelog_topics
    uncommitted = [tp for tp, offset in committed.items()
                   if not offset and tp.topic not in changelogs]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


def stop_batches_across_a_seek() -> None:
    """Stop delivering a batch once the partitions were sought back since it was fetched.

    Faust fetches a batch, then delivers it record by record. When a table rebuild or
    a rebalance comes in between, Faust seeks the partitions back to their committed
    offsets and then delivers the rest of the old batch all the same: it takes the
    offsets between the committed one and the next record it delivers for a gap that
    needs no processing, and drops the records fetched again after the seek as already
    read. They are never processed and the group commits past them (runs of 5–30
    input records in the chaos harness, traced to this). Here the old batch ends at
    the seek, and the partitions are sought back again, so that whatever was fetched
    around the seek is read again, in order.

    faust-streaming #221 (prefetched events delivered after a rebalance); its fix,
    #223, drops records of an older group generation, which a seek within one
    generation (after a table rebuild) is not.
    """
    from faust.transport.consumer import Consumer

    getmany = getattr(Consumer, "_faust_getmany", Consumer.getmany)

    def getmany_until_seek(self: Consumer, timeout: float) -> AsyncIterator[Any]:
        return until_seek(self, getmany(self, timeout))

    Consumer._faust_getmany = getmany  # type: ignore[attr-defined]
    Consumer.getmany = getmany_until_seek  # type: ignore[method-assign]


async def until_seek(consumer: Any, batch: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`batch` up to the first seek after it was fetched; then seek back again."""
    # The batch is fetched on its first step, so a seek counted before it is older.
    seeks = getattr(consumer, "_seeks", 0)
    async for item in batch:
        if getattr(consumer, "_seeks", 0) != seeks:
            try:
                await consumer.perform_seek()
            except Exception as exc:  # a rebalance under way seeks again itself
                log.warning("could not seek back after a stale batch: %r", exc)
            return
        yield item


def skip_stall_check_while_seeking() -> None:
    """Leave a partition out of Faust's stall check while it has no position yet.

    Every few commit intervals Faust reads each partition's position to tell a stalled
    stream; between a seek to the beginning and the broker's answer aiokafka has no
    position and raises on the read, and the exception stops the worker's consumer.
    There is nothing to check on such a partition until the seek is done.

    The check reads aiokafka's partition state directly since faust-streaming #167
    (for #166); #175 reports consumers dying of races in it.
    """
    from aiokafka import TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    verify = getattr(AIOKafkaConsumerThread, "_faust_verify_event_path",
                     AIOKafkaConsumerThread.verify_event_path)

    def verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: Any) -> Any:
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription else None
        state = assignment.state_value(TopicPartition(*tp)) if assignment else None
        if state is not None and not state.has_valid_position:
            return None
        return verify(self, now, tp)

    AIOKafkaConsumerThread._faust_verify_event_path = verify  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]


def correct_end_offsets(bootstrap: str) -> None:
    """Make table recovery read changelogs to their real end on the embedded broker.

    That broker answers ListOffsets with the base offset of a partition's last record
    batch + 1, not with its end, while fetch responses carry the right high watermark.
    Faust reads a changelog up to the ListOffsets answer when it recovers a table, so it
    would skip the tail of the last batch.

    A fault of the broker, not of Faust (faust-streaming #155 and #597 are recoveries
    that hang on end offsets that do not hold); on Kafka this is not installed.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    listed = getattr(AIOKafkaConsumerThread, "_faust_highwaters",
                     AIOKafkaConsumerThread._highwaters)

    async def highwaters(self: AIOKafkaConsumerThread, partitions: list) -> dict:
        return await fetched_end_offsets(bootstrap, dict(await listed(self, partitions)))

    AIOKafkaConsumerThread._faust_highwaters = listed  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._highwaters = highwaters  # type: ignore[method-assign]


END_OFFSETS_TIMEOUT_S = 120.0


async def fetched_end_offsets(bootstrap: str, ends: dict) -> dict:
    """`ends` corrected by the high watermark of one fetch from each last batch.

    It waits for the broker, up to `END_OFFSETS_TIMEOUT_S`: while it restarts, or when
    a busy broker answers slowly, a recovery that read only to the uncorrected ends
    would miss states. Past that, RuntimeError: the recovery fails and the worker exits
    (its supervisor starts it again) rather than decide without them."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError

    nonempty = [tp for tp, end in ends.items() if end]
    if not nonempty:
        return ends
    deadline = time.monotonic() + END_OFFSETS_TIMEOUT_S
    while True:
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False)
        try:
            await probe.start()
            break
        except KafkaConnectionError as exc:
            await probe.stop()
            if time.monotonic() > deadline:
                raise RuntimeError(f"changelog end offsets: {exc}") from exc
            log.warning("changelog end offsets: the broker does not answer; asking again")
            await asyncio.sleep(1.0)
    try:
        probe.assign(nonempty)
        for tp in nonempty:
            probe.seek(tp, ends[tp] - 1)
        pending = set(nonempty)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"changelog end offsets: no fetch from {len(pending)} "
                                   f"partitions within {END_OFFSETS_TIMEOUT_S:.0f} s")
            fetched = await probe.getmany(timeout_ms=500)
            pending -= set(fetched)
        return {tp: max(end or 0, probe.highwater(tp) or 0) if tp in nonempty else end
                for tp, end in ends.items()}
    finally:
        await probe.stop()


def flush_before_commit(app: faust.App, flush_outputs: Any) -> None:
    """Make the flush Faust runs before each commit, and before partitions are revoked,
    first await `flush_outputs()`, then wait until Faust's own buffer is empty.

    Faust's buffer flush returns once 100 ms pass without a send, and the commit goes
    ahead: a kill would then lose records of committed events.

    faust-streaming #173 (the 100-record producer buffer); the flush before a commit
    came with #273, and its giving up after a timeout with #270.
    """
    producer = app.producer
    flush_faust = producer.flush

    async def flush() -> None:
        await flush_outputs()
        while producer.buffer.size:
            await producer.buffer.flush()
        await flush_faust()

    producer.flush = flush  # type: ignore[method-assign]


class StoreAccess:
    """The `last_sent` table's store, a partition at a time, past Faust's per-key API.

    Faust's table writes one key per call, each to the changelog partition of the
    event being processed (~27 µs a key). The cooldown agent instead reads a bundle's
    numbers with one multi-get and writes them with one write batch, into the store
    Faust opened for the bundle's partition, and produces the changelog records itself
    with the same bytes: with raw keys and values a changelog record is exactly the
    store's key and value, and recovery writes it into the store of its partition.

    Only partitions whose store Faust has open are read or written: a revoked
    partition's store is never opened again from here.

    Faust offers no batched table write: writes outside the current event fail
    (faust-streaming #497, #300), so the agent writes the store Faust opened itself.
    """

    def __init__(self, table: Any) -> None:
        self._table = table
        self._store = table.data
        # Faust's RocksDB store keeps one DB per partition in `_dbs`; the memory store
        # keeps one dict for all.
        self._rocksdb = hasattr(self._store, "_dbs")

    @property
    def shares_partitions(self) -> bool:
        """True for the memory store (tests), which keeps every partition in one dict."""
        return not self._rocksdb

    def open(self, partition: int) -> bool:
        """Whether the partition's store is open. Faust opens it when the partition is
        assigned, or at the first table access of an event of that partition; this
        opens it only if the partition is assigned to this worker now."""
        if not self._rocksdb or partition in self._store._dbs:
            return True
        changelog = self._table.changelog_topic.get_topic_name()
        assigned = {tp for tp in self._table.app.assignor.assigned_actives()
                    if tp.topic == changelog}
        if not any(tp.partition == partition for tp in assigned):
            return False
        self._store._db_for_partition(partition)
        return True

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        if not self._rocksdb:
            data = self._store.data
            return [data.get(key) for key in keys]
        return list(self._store._dbs[partition][keys])

    def keys_between(self, partition: int, start: bytes, end: bytes,
                     limit: int) -> list[bytes]:
        """Up to `limit` keys from `start` (included) to `end` (excluded), in order."""
        if not self._rocksdb:
            return sorted(k for k in self._store.data if start <= k < end)[:limit]
        db = self._store._dbs.get(partition)
        if db is None:
            return []
        keys: list[bytes] = []
        iterator = db.iter()
        iterator.seek(start)
        while iterator.valid() and len(keys) < limit:
            key = iterator.key()
            if key >= end:
                break
            keys.append(key)
            iterator.next()
        return keys

    def estimated_keys(self, partition: int) -> int | None:
        """RocksDB's estimate of the partition's keys (None: the store is not open
        here, or shares its partitions)."""
        if not self._rocksdb:
            return None
        db = self._store._dbs.get(partition)
        return None if db is None else int(db.property_int_value("rocksdb.estimate-num-keys"))

    def write(self, partition: int, items: Iterable[tuple[bytes, bytes | None]],
              changelog_offset: int | None) -> bool:
        """Write `items` (a value of None deletes the key) and, in the same batch, the
        changelog offset they reach. False when the partition's store is no longer
        open (revoked)."""
        if not self._rocksdb:
            data = self._store.data
            for key, value in items:
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            return True
        db = self._store._dbs.get(partition)
        if db is None:
            return False
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            # Where recovery starts reading this partition's changelog next time.
            batch.put(self._store.offset_key, str(changelog_offset).encode())
        db.write(batch)
        return True


def read_changelogs_in_batches(bootstrap: str, deadline_s: float = 600.0) -> None:
    """Before Faust recovers a table partition record by record, bring its store up to
    the changelog's end with librdkafka, a batch of thousands at a time.

    Faust's recovery passes every changelog record through its stream machinery (about
    10,000 records a second here): a million numbers would take minutes. Here, when
    recovery has worked out where each active partition's store is, the changelog is
    read from there to its end (the end of the fetch, which is right on every broker),
    written in write batches together with the offset reached, and recovery is told
    that offset: it then finds nothing, or only what came since, left to read.
    Records are applied in order, tombstones delete.
    """
    from faust.tables.recovery import Recovery

    build = getattr(Recovery, "_faust_build_offsets", Recovery._build_offsets)

    async def build_offsets(self: Recovery, consumer: Any, tps: Any, destination: Any,
                            title: str) -> None:
        if title == "active":
            stores = {tp: self.tp_to_table[tp].data  # type: ignore[attr-defined]
                      for tp in tps if tp in self.tp_to_table}
            starts = {tp: destination[tp] for tp, store in stores.items()
                      if hasattr(store, "_dbs") and tp.partition in store._dbs}
            if starts:
                loop = asyncio.get_running_loop()
                reached = await loop.run_in_executor(
                    None, read_into_stores, bootstrap, stores, starts, deadline_s)
                for tp, offset in reached.items():  # a Counter: update() would add
                    destination[tp] = offset
        await build(self, consumer, tps, destination, title)

    Recovery._faust_build_offsets = build  # type: ignore[attr-defined]
    Recovery._build_offsets = build_offsets  # type: ignore[method-assign]


def read_into_stores(bootstrap: str, stores: Mapping[Any, Any],
                     persisted: Mapping[Any, int | None], deadline_s: float) -> dict[Any, int]:
    """Read each changelog partition from after its persisted offset to its end into its
    store; returns the offset each reached (only those that read something)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    from rocksdict import WriteBatch

    from streams.kafka import librdkafka_log

    by_partition = {(tp.topic, tp.partition): tp for tp in persisted}
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "logger": librdkafka_log,
        "group.id": "smscool-changelog-reader",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "fetch.wait.max.ms": 100, "max.partition.fetch.bytes": 8 * 1024 * 1024,
    })
    reached: dict[Any, int] = {}
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition,
                                        0 if offset is None else offset + 1)
                         for tp, offset in persisted.items()])
        pending = set(by_partition)
        batches: dict[Any, Any] = {tp: WriteBatch(raw_mode=True) for tp in persisted}
        read = written = 0

        def write_batches() -> None:
            for tp, batch in batches.items():
                if tp in reached and len(batch):
                    store = stores[tp]
                    batch.put(store.offset_key, str(reached[tp]).encode())
                    store._dbs[tp.partition].write(batch)
                    batches[tp] = WriteBatch(raw_mode=True)

        while pending and time.monotonic() - started < deadline_s:
            for message in consumer.consume(10_000, timeout=1.0):
                error = message.error()
                where = (message.topic(), message.partition())
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    pending.discard(where)
                    continue
                tp = by_partition[where]
                value = message.value()
                if value is None:
                    batches[tp].delete(message.key())
                else:
                    batches[tp].put(message.key(), value)
                reached[tp] = message.offset()  # type: ignore[assignment]
                read += 1
            if read - written >= 100_000:
                write_batches()
                written = read
                log.info("read %d changelog records into the table so far", read)
        write_batches()
        if pending:
            log.warning("changelog not read to its end in %.0f s; Faust's recovery reads "
                        "the rest", deadline_s)
        log.info("read changelog partitions %s into the table: up to offsets %s in %.1f s",
                 sorted(p for _, p in by_partition),
                 {tp.partition: offset for tp, offset in sorted(reached.items())},
                 time.monotonic() - started)
        return reached
    finally:
        consumer.close()
