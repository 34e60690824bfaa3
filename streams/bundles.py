"""Bundles of number events: how ingest hands many events to the cooldown agent in
one Kafka record.

A bundle holds number events whose E.164 numbers all fall on the partition it is
written to, in the order ingest read them, so the agent that owns that partition
owns every number in it. Numbers fall on partitions as Faust and Java clients place
keys: murmur2 of the E.164 bytes, positive, modulo the partition count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from streams import codecs
from streams.records import NumberEvent

# Kafka's default message.max.bytes is 1,048,588; the record's own overhead and the
# batch header stay well under the margin left here.
DEFAULT_MAX_BUNDLE_BYTES = 900_000


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed int."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    if tail:
        rest = data[length - tail:]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=200_000)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Faust, aiokafka and Java clients put `key` on."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def by_partition(events: Sequence[NumberEvent], partitions: int) -> dict[int, list[NumberEvent]]:
    """The events grouped by the partition of their number, each group in input order."""
    groups: dict[int, list[NumberEvent]] = {}
    for event in events:
        groups.setdefault(partition_for(event.e164.encode(), partitions), []).append(event)
    return groups


class EventTooLarge(ValueError):
    """A single number event larger than a bundle may be."""


def encode_bundles(events: Sequence[NumberEvent], max_bytes: int) -> Iterator[bytes]:
    """The events as one encoded bundle, or as several in order when one would exceed
    `max_bytes`."""
    encoded = codecs.NUMBER_EVENT_BUNDLE.encode({"events": [e.to_dict() for e in events]})
    if len(encoded) <= max_bytes:
        yield encoded
        return
    if len(events) == 1:
        raise EventTooLarge(f"a number event of {len(encoded)} bytes exceeds a bundle's "
                            f"{max_bytes} bytes")
    middle = len(events) // 2
    yield from encode_bundles(events[:middle], max_bytes)
    yield from encode_bundles(events[middle:], max_bytes)


def decode_bundle(data: bytes | None) -> list[NumberEvent]:
    """The events of one bundle; CodecError when it is not one."""
    bundle = codecs.NUMBER_EVENT_BUNDLE.decode(data)
    return [NumberEvent.from_dict(event) for event in bundle["events"]]


def events_seen(wanted: int, kind: str | None = None) -> Callable[[list[Any]], bool]:
    """A condition for `streams.kafka.read_records(until=…)` on the bundle topic: true
    once the bundles read hold `wanted` events (of `kind`, if given). Each call looks
    at the newest record only."""
    seen = 0

    def enough(records: list[Any]) -> bool:
        nonlocal seen
        seen += sum(kind is None or event.kind == kind
                    for event in decode_bundle(records[-1].value))
        return seen >= wanted

    return enough
