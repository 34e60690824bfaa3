"""Bundles: numbers fall on the partitions Kafka's clients put them on; bundles keep
their events' order, split under their size limit, and refuse what is not a bundle."""

import pytest

from streams import codecs
from streams.bundles import (
    EventTooLarge,
    by_partition,
    decode_bundle,
    encode_bundles,
    murmur2,
    partition_for,
)
from streams.records import NumberEvent

# From Kafka's own tests (clients/src/test/java/.../utils/UtilsTest.java, testMurmur2).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2.items())
def test_murmur2_is_kafkas(data, expected):
    assert murmur2(data) == expected


def test_partition_for_matches_aiokafka_and_so_faust():
    from aiokafka.partitioner import DefaultPartitioner

    place = DefaultPartitioner()
    for n in range(500):
        key = f"+4520{n:06d}".encode()
        for partitions in (1, 4, 12):
            assert partition_for(key, partitions) == place(key, list(range(partitions)), [])


def event(n, text="Hi"):
    return NumberEvent("trigger", f"+4520{n:06d}", 1000 + n, "sms.triggers", 0, n,
                       event_id=f"evt-{n}", decision_id="d" * 32, automation_id="a",
                       text=text, sender="ACME")


def test_by_partition_keeps_the_input_order_in_each_group():
    events = [event(n % 50) for n in range(200)]
    groups = by_partition(events, 4)
    assert sum(len(g) for g in groups.values()) == 200
    for partition, group in groups.items():
        assert all(partition_for(e.e164.encode(), 4) == partition for e in group)
        assert group == [e for e in events if partition_for(e.e164.encode(), 4) == partition]


def test_a_bundle_round_trips():
    events = [event(n) for n in range(10)]
    (encoded,) = encode_bundles(events, 900_000)
    assert decode_bundle(encoded) == events


def test_bundles_split_under_the_limit_in_order():
    events = [event(n, text="x" * 100) for n in range(1000)]
    encoded = list(encode_bundles(events, 20_000))
    assert len(encoded) > 1
    assert all(len(b) <= 20_000 for b in encoded)
    assert [e for b in encoded for e in decode_bundle(b)] == events


def test_one_event_larger_than_a_bundle_is_refused():
    with pytest.raises(EventTooLarge):
        list(encode_bundles([event(1, text="x" * 5000)], 1000))


@pytest.mark.parametrize("data", [b"\xff\xfe", b"", None])
def test_what_is_not_a_bundle_gives_a_codec_error(data):
    with pytest.raises(codecs.CodecError):
        decode_bundle(data)
