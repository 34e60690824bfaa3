"""Changes to the consumer that Faust's worker runs.

Faust builds it with a fixed fetch wait; after rebuilding a table it leaves a partition
that has no committed offset wherever its fetcher got to; it goes on delivering a batch
fetched before it sought the partitions back to their committed offsets; and its check
for stalled partitions crashes the consumer when it looks at a partition whose seek is
still under way. Each is replaced here, on Faust's classes, so the change holds for
every consumer a worker starts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

log = logging.getLogger(__name__)


def set_fetch_wait(ms: int) -> None:
    """Make Faust's stream consumer wait at most `ms` at the broker for records.

    Faust builds that consumer with a fixed 1,500 ms wait; a broker that answers an
    empty fetch only when the wait runs out then delays each hop by up to that much.
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
    """
    from aiokafka import TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    verify = getattr(AIOKafkaConsumerThread, "_faust_verify_event_path",
                     AIOKafkaConsumerThread.verify_event_path)

    def verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: Any) -> None:
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription else None
        state = assignment.state_value(TopicPartition(*tp)) if assignment else None
        if state is not None and not state.has_valid_position:
            return None
        return verify(self, now, tp)

    AIOKafkaConsumerThread._faust_verify_event_path = verify  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]
