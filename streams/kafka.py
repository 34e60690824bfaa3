"""confluent-kafka clients for the command line, the demo, the connector and the tests:
topic creation and the partition-count check, a producer that partitions keys the way
Faust and Java clients do, `produce_all` to write a list of records through it, and
readers that collect a topic's records.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streams.records import Source
from streams.settings import idempotent_producers
from streams.topics import TopicSpec


class PartitionMismatch(RuntimeError):
    pass


_ELAPSED = re.compile(r"\(after \d+ms")


class _OncePerMinute(logging.Filter):
    """Lets a librdkafka message through once a minute: while a broker is down each
    client says it cannot connect twenty times a second."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[object, ...], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # The same failure again says how long its attempt took: not a new message.
        key = tuple(_ELAPSED.sub("(after", str(a)) for a in record.args) \
            if isinstance(record.args, tuple) else (record.msg,)
        now = time.monotonic()
        if now - self._last.get(key, -60.0) < 60.0:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# Every librdkafka client made here logs through this logger (served by the client's
# poll calls), named by its client name.
librdkafka_log = logging.getLogger("librdkafka")
librdkafka_log.addFilter(_OncePerMinute())


def admin(bootstrap: str) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": librdkafka_log}
    return AdminClient(config)


def producer(bootstrap: str, **extra: object) -> Producer:
    # librdkafka's default partitioner (CRC32) puts a key on another partition than
    # Faust/aiokafka and Java clients do; murmur2_random matches them. Idempotence
    # (which implies acks=all): the retries that follow a broker's failure neither
    # write a record twice nor put a later one before it, and a partition's order is
    # what the table's changelog rests on. Without it (`idempotent_producers`), one
    # request in flight keeps that order.
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "logger": librdkafka_log,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
    }
    if idempotent_producers():
        config["enable.idempotence"] = True
    else:
        config.update({"enable.idempotence": False, "acks": "all",
                       "max.in.flight.requests.per.connection": 1})
    config.update(extra)
    return Producer(config)


# A record to write: key, value and, optionally, its timestamp in epoch ms (without one,
# or with 0, the producer's clock).
Outgoing = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, int]
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class NotDelivered(RuntimeError):
    """Kafka did not acknowledge every record handed to the producer."""


def position(message: Message) -> tuple[str, int, int]:
    """A consumed record's topic, partition and offset. Every record consumed has them;
    only error events lack them, which the client's types cannot tell apart. (An
    acknowledged record may lack its offset: an idempotent producer's retry that the
    broker had written already is acknowledged without one.)"""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def produce_all(out: Producer, topic: str, records: Iterable[Outgoing], *,
                on_delivery: DeliveryCallback | None = None,
                timeout_s: float | None = 60.0) -> None:
    """Hand every record to `out`, in order, then wait up to `timeout_s` until Kafka has
    acknowledged them all; NotDelivered if it has not, or refused one.

    When librdkafka's queue is full, deliveries are served until there is room. With
    `timeout_s=None` it returns once every record is queued: the caller keeps polling
    `out` and learns each record's fate from `on_delivery`.
    """
    refused: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            refused.append(err)
        if on_delivery is not None:
            on_delivery(err, msg)

    callback = on_delivery if timeout_s is None else delivered
    count = 0
    for record in records:
        timestamp = record[2] if len(record) > 2 else 0
        while True:
            try:
                out.produce(topic, key=record[0], value=record[1], timestamp=timestamp,
                            on_delivery=callback)
                break
            except BufferError:
                out.poll(0.05)
        out.poll(0)
        count += 1
    if timeout_s is None:
        return
    left = out.flush(timeout_s)
    if left:
        raise NotDelivered(f"{topic}: {left} records not acknowledged within {timeout_s} s")
    if refused:
        first = refused[0]
        reason = first.str() if isinstance(first, KafkaError) else str(first)
        raise NotDelivered(f"{topic}: {len(refused)} of {count} records not written: {reason}")


def partition_counts(bootstrap: str, timeout_s: float = 10.0) -> dict[str, int]:
    metadata = admin(bootstrap).list_topics(timeout=timeout_s)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not t.error}


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that are missing; refuse when co-partitioned ones disagree.

    Returns the names of the topics created.
    """
    specs = list(specs)
    existing = partition_counts(bootstrap)
    mismatched = [
        f"{s.name} has {existing[s.name]} partitions, expected {s.partitions}"
        for s in specs
        if s.copartitioned and s.name in existing and existing[s.name] != s.partitions
    ]
    if mismatched:
        raise PartitionMismatch(
            "the cooldown agent needs every E.164-keyed topic it reads, and its table's "
            "changelog, to have the same partition count (SMSCOOL_PARTITIONS): "
            + "; ".join(mismatched)
        )
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    replication = 1 if _single_broker(bootstrap) else -1
    new_topics = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=replication,
            config={"cleanup.policy": "compact"} if s.compacted else {},
        )
        for s in missing
    ]
    # The client must outlive its futures: a collected AdminClient cancels them.
    client = admin(bootstrap)
    futures = client.create_topics(new_topics, request_timeout=timeout_s)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_topics(bootstrap, [s.name for s in missing], timeout_s)
    return [s.name for s in missing]


def _single_broker(bootstrap: str) -> bool:
    return len(admin(bootstrap).list_topics(timeout=10).brokers) <= 1


def _wait_for_topics(bootstrap: str, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = partition_counts(bootstrap)
        if all(counts.get(n, 0) > 0 for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible after {timeout_s} s: {', '.join(names)}")


# A record as read: where it came from, its Kafka timestamp, key and value.
Record = Source


def read_records(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool] | None = None,
    idle_s: float = 1.0,
    timeout_s: float = 60.0,
) -> list[Record]:
    """Read a topic from the beginning, outside any consumer group.

    Stops when `until(records)` says so or, without `until`, once the topic is read to
    where it ended and no record has come for `idle_s` (`iter_records`).
    """
    records: list[Record] = []
    for record in iter_records(bootstrap, topic, idle_s=idle_s, timeout_s=timeout_s):
        records.append(record)
        if until is not None and until(records):
            return records
    if until is not None and not until(records):
        raise TimeoutError(f"{topic}: condition not met after {timeout_s} s ({len(records)} read)")
    return records


def wait_for(bootstrap: str, topic: str, done: Callable[[list[Record]], bool],
             timeout_s: float) -> list[Record]:
    """Read `topic` from the start, waiting for new records, until `done(records)`;
    TimeoutError when that does not happen within `timeout_s`."""
    records: list[Record] = []
    for record in iter_records(bootstrap, topic, follow=True, timeout_s=timeout_s):
        records.append(record)
        if done(records):
            return records
    raise TimeoutError(f"{topic}: gave up after {timeout_s} s with {len(records)} records")


def iter_records(
    bootstrap: str, topic: str, *, idle_s: float = 1.0, timeout_s: float = 60.0,
    follow: bool = False, start: dict[int, int] | None = None,
) -> Iterator[Record]:
    """A topic's records from `start` (partition -> offset; default: the beginning).

    Without `follow`: until every partition is read up to where it ended when the read
    began and then `idle_s` pass without a record; TimeoutError if that takes longer
    than `timeout_s`. (The end offsets are taken as lower bounds only: the embedded
    broker reports the base offset of a partition's last batch. Idleness alone is no
    proof of the end: a slow broker can answer nothing for seconds.) With `follow`:
    until `timeout_s`.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "logger": librdkafka_log,
        "group.id": f"smscool-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if not partitions:
            raise KeyError(f"topic {topic} does not exist")
        next_offsets = {p: (start or {}).get(p, 0) for p in partitions}
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in next_offsets.items()])
        ends = {} if follow else {p: consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=10, cached=False)[1] for p in partitions}

        def read_to_the_ends() -> bool:
            return all(next_offsets[p] >= end for p, end in ends.items())

        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while True:
            if time.monotonic() >= deadline:
                if follow:
                    return
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s} s")
            batch = consumer.consume(1000, timeout=0.2)
            if not batch:
                if not follow and time.monotonic() - last_seen >= idle_s \
                        and read_to_the_ends():
                    return
                continue
            last_seen = time.monotonic()
            for m in batch:
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                topic_name, partition, offset = position(m)
                next_offsets[partition] = offset + 1
                yield Record(topic_name, partition, offset, m.timestamp()[1], m.key(), m.value())
    finally:
        consumer.close()
