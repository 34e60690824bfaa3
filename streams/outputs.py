"""Where the agents' records go: librdkafka's producer, flushed before Faust commits.

Faust's own producer (aiokafka) costs tens of microseconds of Python per record and
sends a request for every one or two records; the worker writes two or three records
per trigger, so that was most of its time. librdkafka batches in its own thread.

At-least-once still holds: Faust flushes its producer before it commits offsets, and
`attach_to` makes that flush wait for these records and for the table's changelog
writes, so an offset is never committed before the records its event produced are
acknowledged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams import kafka


class OutputError(RuntimeError):
    """A record could not be written; the worker must not commit past it."""


class KafkaOutputs:
    def __init__(self, bootstrap: str, linger_ms: int) -> None:
        self._producer = kafka.producer(bootstrap, **{
            "linger.ms": linger_ms,
            "acks": "all",
            "queue.buffering.max.messages": 500_000,
        })
        self._failure: str | None = None

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:
                # The local queue is full: let librdkafka deliver some first.
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None and self._failure is None:
            self._failure = str(err)

    async def flush(self) -> None:
        while len(self._producer) > 0:
            self._producer.poll(0)
            await asyncio.sleep(0.002)
        self._producer.poll(0)
        if self._failure is not None:
            raise OutputError(f"a record was not written: {self._failure}")

    def attach_to(self, app: Any) -> None:
        """Make the flush before each of Faust's commits wait for these records, and
        for every table write Faust holds in its own buffer."""
        producer = app.producer
        flush_faust = producer.flush

        async def flush() -> None:
            await self.flush()
            # Faust's buffer flush returns once 100 ms pass without a send, and the
            # commit goes ahead: a kill would then lose table writes of committed
            # events, and with them reservations. Wait until the buffer is empty.
            while producer.buffer.size:
                await producer.buffer.flush()
            await flush_faust()

        producer.flush = flush
