"""The changes to Faust's consumer: a batch stops at a seek, and the stall check
leaves a partition alone while its seek is under way."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.faust_patches import skip_stall_check_while_seeking, until_seek


class Consumer:
    """What `until_seek` uses of Faust's consumer: its seek count and perform_seek."""

    def __init__(self) -> None:
        self._seeks = 0
        self.seeks_back = 0

    async def perform_seek(self) -> None:
        self.seeks_back += 1
        self._seeks += 1


async def _batch(consumer: Consumer, offsets: list[int], seek_after: int):
    for offset in offsets:
        yield ("tp", offset)
        if offset == seek_after:
            # A rebalance or a table rebuild sought the partitions back meanwhile.
            consumer._seeks += 1


def _delivered(consumer: Consumer, batch) -> list[int]:
    async def collect() -> list[int]:
        return [offset async for _tp, offset in until_seek(consumer, batch)]
    return asyncio.run(collect())


def test_a_batch_is_delivered_whole_when_nothing_seeks():
    consumer = Consumer()
    assert _delivered(consumer, _batch(consumer, [5, 6, 7], seek_after=-1)) == [5, 6, 7]
    assert consumer.seeks_back == 0


def test_a_batch_stops_at_a_seek_and_the_partitions_are_sought_back_again():
    consumer = Consumer()
    assert _delivered(consumer, _batch(consumer, [5, 6, 7, 8], seek_after=6)) == [5, 6]
    assert consumer.seeks_back == 1


def test_a_seek_before_the_batch_was_fetched_does_not_stop_it():
    consumer = Consumer()
    consumer._seeks = 3
    assert _delivered(consumer, _batch(consumer, [5, 6], seek_after=-1)) == [5, 6]


def test_the_stall_check_skips_a_partition_waiting_for_its_position():
    from aiokafka import TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    checked: list[int] = []
    saved = {name: AIOKafkaConsumerThread.__dict__[name]
             for name in ("verify_event_path", "_faust_verify_event_path")
             if name in AIOKafkaConsumerThread.__dict__}
    states = {TopicPartition("t", 0): SimpleNamespace(has_valid_position=False),
              TopicPartition("t", 1): SimpleNamespace(has_valid_position=True)}
    assignment = SimpleNamespace(state_value=states.get)
    fetcher = SimpleNamespace(_subscriptions=SimpleNamespace(
        subscription=SimpleNamespace(assignment=assignment)))
    thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_fetcher=fetcher))
    try:
        # Faust's own check, as the change finds it (also when an app was built before).
        AIOKafkaConsumerThread._faust_verify_event_path = \
            lambda self, now, tp: checked.append(tp[1])
        skip_stall_check_while_seeking()
        for partition in (0, 1):
            AIOKafkaConsumerThread.verify_event_path(thread, 0.0, ("t", partition))
    finally:
        for name in ("verify_event_path", "_faust_verify_event_path"):
            if name in saved:
                setattr(AIOKafkaConsumerThread, name, saved[name])
            elif name in AIOKafkaConsumerThread.__dict__:
                delattr(AIOKafkaConsumerThread, name)
    assert checked == [1]


def test_the_patches_refuse_another_faust_version(monkeypatch):
    import faust
    import pytest

    from streams.faust_patches import FAUST_VERSION, install

    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(RuntimeError, match=FAUST_VERSION):
        install("127.0.0.1:9", 500, embedded=False)


def test_faust_is_pinned_to_the_version_the_patches_are_for():
    from pathlib import Path

    import faust

    from streams.faust_patches import FAUST_VERSION

    assert faust.__version__ == FAUST_VERSION
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"faust-streaming=={FAUST_VERSION}"' in pyproject
