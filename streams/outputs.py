"""Where the cooldown agent's records go: librdkafka's producer, flushed before Faust
commits.

Faust's own producer (aiokafka) costs tens of microseconds of Python per record and
holds at most 100 records in its buffer; the agent writes a decision, a send request
and a changelog record per trigger. librdkafka batches in its own thread.

At-least-once holds because Faust flushes its producer before it commits offsets and
before partitions are revoked, and `streams.faust_patches.flush_before_commit` makes
that flush wait for these records first: an offset is never committed before the
records its bundle produced are acknowledged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams import kafka


class OutputError(RuntimeError):
    """A record could not be written; the worker must not commit past it."""


class KafkaOutputs:
    """One librdkafka producer; `acknowledged` follows the topic `offsets_of`."""

    def __init__(self, bootstrap: str, linger_ms: int, *, offsets_of: str | None = None,
                 config: dict[str, object] | None = None) -> None:
        self._producer = kafka.producer(bootstrap, **{
            "linger.ms": linger_ms,
            "acks": "all",
            "queue.buffering.max.messages": 1_000_000,
            **(config or {}),
        })
        self._failure: str | None = None
        self._offsets_of = offsets_of
        # Partition -> highest acknowledged offset of the topic `offsets_of`.
        self.acknowledged: dict[int, int] = {}

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> None:
        args: dict[str, Any] = {"on_delivery": self._delivered}
        if partition is not None:
            args["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, key, **args)
                return
            except BufferError:
                # The local queue is full: let librdkafka deliver some first.
                self._producer.poll(0.05)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            if self._failure is None:
                self._failure = str(err)
        elif msg.topic() == self._offsets_of:
            partition, offset = msg.partition(), msg.offset()
            # None: a retry after a broker's restart that the broker had written already
            # (a duplicate sequence) is acknowledged without its offset. The highest
            # known offset stays a safe place for recovery to read the changelog from.
            if offset is not None and offset > self.acknowledged.get(partition, -1):
                self.acknowledged[partition] = offset

    async def flush(self) -> None:
        """Return once every record sent so far is acknowledged; OutputError if one
        could not be written.

        Each wait blocks the event loop (for the few milliseconds the broker takes),
        so that nothing is sent meanwhile and the flush ends; between waits the loop
        runs, so a broker that does not answer does not freeze the worker.
        """
        while self._producer.flush(0.2) > 0:
            await asyncio.sleep(0)
        if self._failure is not None:
            raise OutputError(f"a record was not written: {self._failure}")
