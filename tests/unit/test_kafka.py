"""`produce_all` against a fake librdkafka producer with a small local queue."""

from __future__ import annotations

import pytest

from streams.kafka import NotDelivered, produce_all


class FakeProducer:
    """Queues up to `room` records; poll() delivers the oldest, flush() all of them (or
    none, with `stuck`). Records whose value is b"refuse" are delivered with an error."""

    def __init__(self, room: int = 2, stuck: bool = False) -> None:
        self.room = room
        self.stuck = stuck
        self.queue: list[tuple] = []
        self.written: list[tuple] = []
        self.full = 0

    def produce(self, topic, key=None, value=None, timestamp=0, on_delivery=None) -> None:
        if len(self.queue) >= self.room:
            self.full += 1
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value, timestamp, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        if self.stuck or not self.queue or timeout == 0:
            return 0
        self._deliver(self.queue.pop(0))
        return 1

    def flush(self, timeout: float = 0) -> int:
        while self.queue and not self.stuck:
            self._deliver(self.queue.pop(0))
        return len(self.queue)

    def _deliver(self, queued: tuple) -> None:
        topic, key, value, timestamp, on_delivery = queued
        self.written.append((topic, key, value, timestamp))
        if on_delivery is not None:
            on_delivery("refused" if value == b"refuse" else None, queued)


def test_every_record_is_written_in_order_waiting_for_room_when_the_queue_is_full():
    out = FakeProducer(room=2)
    records = [(f"k{i}".encode(), f"v{i}".encode(), 1000 + i) for i in range(10)]
    produce_all(out, "t", records)
    assert out.written == [("t", k, v, ts) for k, v, ts in records]
    assert out.full > 0


def test_a_record_without_a_timestamp_takes_the_producers_clock():
    out = FakeProducer()
    produce_all(out, "t", [(b"k", None)])
    assert out.written == [("t", b"k", None, 0)]


def test_records_not_acknowledged_in_time_raise():
    with pytest.raises(NotDelivered, match="2 records not acknowledged"):
        produce_all(FakeProducer(room=5, stuck=True), "t", [(b"k", b"v"), (b"k", b"w")])


def test_a_refused_record_raises_and_the_callers_callback_still_hears_of_it():
    heard = []
    with pytest.raises(NotDelivered, match="1 of 3 records not written: refused"):
        produce_all(FakeProducer(), "t", [(b"k", b"ok"), (b"k", b"refuse"), (b"k", b"ok")],
                    on_delivery=lambda err, msg: heard.append(err))
    assert heard == [None, "refused", None]


def test_without_a_timeout_it_returns_once_queued():
    out = FakeProducer(room=5)
    heard = []
    produce_all(out, "t", [(b"k", b"refuse")], on_delivery=lambda err, msg: heard.append(err),
                timeout_s=None)
    assert len(out.queue) == 1 and not heard
    out.flush()
    assert heard == ["refused"]


def test_librdkafka_says_the_same_failure_once_a_minute(monkeypatch):
    import logging

    from streams import kafka

    now = [1000.0]
    monkeypatch.setattr(kafka.time, "monotonic", lambda: now[0])
    once = kafka._OncePerMinute()

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("librdkafka", logging.ERROR, "", 0, "%s [%s] %s",
                                 ("FAIL", "rdkafka#producer-1", text), None)

    refused = ("127.0.0.1:9092/bootstrap: Connect failed: Connection refused "
               "(after {}ms in state CONNECT)")
    assert once.filter(record(refused.format(0)))
    now[0] += 1
    assert not once.filter(record(refused.format(2)))  # the same, another attempt's time
    assert once.filter(record("127.0.0.1:9092/1: Disconnected"))  # a new message
    now[0] += 60
    assert once.filter(record(refused.format(0)))  # a minute later: said again


class Consumed:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + self._offset)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._offset


class StallingConsumer:
    """A topic of two partitions whose broker answers nothing for the first `stalls`
    fetches; partition 0 ends at 3 (its last batch's base offset, as the embedded broker
    reports it: the true end is 4), partition 1 at 1."""

    stalls = 5

    def __init__(self, _config: dict) -> None:
        self.fetches = 0
        self.waiting = [Consumed(0, o) for o in range(4)] + [Consumed(1, 0)]

    def list_topics(self, topic: str, timeout: float):
        from types import SimpleNamespace
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None, 1: None})})

    def assign(self, _partitions) -> None:
        pass

    def get_watermark_offsets(self, tp, timeout: float, cached: bool) -> tuple[int, int]:
        return (0, 3 if tp.partition == 0 else 1)

    def consume(self, count: int, timeout: float) -> list:
        self.fetches += 1
        if self.fetches <= self.stalls or not self.waiting:
            return []
        batch, self.waiting = self.waiting, []
        return batch

    def close(self) -> None:
        pass


def test_a_read_to_the_end_outlasts_a_broker_that_answers_nothing_for_a_while(monkeypatch):
    from streams import kafka

    monkeypatch.setattr(kafka, "Consumer", StallingConsumer)
    records = list(kafka.iter_records("127.0.0.1:9", "t", idle_s=0.0, timeout_s=60))
    assert [(r.partition, r.offset) for r in records] == [(0, 0), (0, 1), (0, 2), (0, 3),
                                                           (1, 0)]


def test_a_read_that_cannot_reach_the_end_in_time_says_so(monkeypatch):
    from streams import kafka

    monkeypatch.setattr(StallingConsumer, "stalls", 10**9)
    monkeypatch.setattr(kafka, "Consumer", StallingConsumer)
    with pytest.raises(TimeoutError, match="not read to its end"):
        list(kafka.iter_records("127.0.0.1:9", "t", idle_s=0.0, timeout_s=0.3))


@pytest.mark.parametrize("value, idempotent", [(None, True), ("true", True), ("false", False),
                                               ("0", False)])
def test_producers_are_idempotent_unless_told_otherwise(monkeypatch, value, idempotent):
    from streams import kafka

    if value is None:
        monkeypatch.delenv("SMSCOOL_IDEMPOTENCE", raising=False)
    else:
        monkeypatch.setenv("SMSCOOL_IDEMPOTENCE", value)
    monkeypatch.setattr(kafka, "Producer", lambda config: config)
    config = kafka.producer("127.0.0.1:9", **{"linger.ms": 50})
    assert config["enable.idempotence"] is idempotent
    assert config["linger.ms"] == 50
    if not idempotent:  # retries keep each partition's order with one request in flight
        assert config["max.in.flight.requests.per.connection"] == 1
        assert config["acks"] == "all"


def test_a_setting_that_is_neither_true_nor_false_is_refused(monkeypatch):
    from streams import kafka

    monkeypatch.setenv("SMSCOOL_IDEMPOTENCE", "maybe")
    with pytest.raises(ValueError, match="SMSCOOL_IDEMPOTENCE must be true or false"):
        kafka.producer("127.0.0.1:9")
