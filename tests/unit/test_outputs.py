"""What Faust's flush before a commit waits for (`faust_patches.flush_before_commit`),
and the outputs' record of acknowledged changelog offsets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.faust_patches import flush_before_commit
from streams.outputs import KafkaOutputs


class SlowBuffer:
    """Faust's ProducerBuffer when sends are slow: each flush hands over one record
    and gives up."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def flush(self) -> None:
        if self.size:
            self.size -= 1


def test_the_flush_before_a_commit_waits_for_the_outputs_then_every_buffered_record():
    buffer = SlowBuffer(5)
    seen: list[str] = []

    async def producer_flush() -> None:
        seen.append(f"faust flush with {buffer.size} buffered")

    async def flush_outputs() -> None:
        seen.append("outputs flushed")

    app = SimpleNamespace(producer=SimpleNamespace(buffer=buffer, flush=producer_flush))
    flush_before_commit(app, flush_outputs)  # type: ignore[arg-type]

    asyncio.run(app.producer.flush())

    assert seen == ["outputs flushed", "faust flush with 0 buffered"]


class Delivered:
    def __init__(self, topic: str, partition: int, offset: int | None) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int | None:
        return self._where[2]


def test_acknowledged_keeps_the_highest_offset_per_partition_of_one_topic():
    # No record is sent, so the producer never connects to this address.
    outputs = KafkaOutputs("127.0.0.1:9", linger_ms=5, offsets_of="changelog")
    for topic, partition, offset in [("changelog", 0, 7), ("changelog", 0, 5),
                                     ("changelog", 1, 2), ("sms.decisions", 0, 99)]:
        outputs._delivered(None, Delivered(topic, partition, offset))
    assert outputs.acknowledged == {0: 7, 1: 2}


def test_a_record_acknowledged_without_its_offset_leaves_the_offsets_as_they_were():
    # confluent-kafka's Message.offset() is None for a retry the broker had written
    # already (a duplicate sequence, after the broker restarted).
    outputs = KafkaOutputs("127.0.0.1:9", linger_ms=5, offsets_of="changelog")
    outputs._delivered(None, Delivered("changelog", 0, 7))
    outputs._delivered(None, Delivered("changelog", 0, None))
    outputs._delivered(None, Delivered("changelog", 1, None))
    assert outputs.acknowledged == {0: 7}
