"""Two changes to the aiokafka consumer that Faust's worker runs.

Faust builds it with a fixed fetch wait, and after rebuilding a table it leaves a
partition that has no committed offset wherever its fetcher got to. Both are replaced
here, on Faust's consumer-thread class, so they hold for every consumer a worker starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
    # Faust keeps a table's changelog position itself, in the table's store.
    changelogs = thread.consumer.app.tables.changelog_topics
    uncommitted = [tp for tp, offset in committed.items()
                   if not offset and tp.topic not in changelogs]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed
