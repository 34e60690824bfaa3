"""KafkaOutputs.attach_to: what Faust's flush before a commit waits for."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.outputs import KafkaOutputs


class SlowBuffer:
    """Faust's ProducerBuffer when sends are slow: each flush hands over one record
    and gives up."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def flush(self) -> None:
        if self.size:
            self.size -= 1


def test_the_flush_before_a_commit_waits_for_every_buffered_table_write():
    buffer = SlowBuffer(5)
    seen_by_producer_flush: list[int] = []

    async def producer_flush() -> None:
        seen_by_producer_flush.append(buffer.size)

    app = SimpleNamespace(producer=SimpleNamespace(buffer=buffer, flush=producer_flush))
    # No record is sent, so the producer never connects to this address.
    KafkaOutputs("127.0.0.1:9", linger_ms=5).attach_to(app)

    asyncio.run(app.producer.flush())

    assert buffer.size == 0
    assert seen_by_producer_flush == [0]
