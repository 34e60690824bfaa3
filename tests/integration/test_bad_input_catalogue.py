"""The bad-input catalogue: every kind of bad trigger a producer can write, fed into one
running worker between good triggers. Each bad one ends in sms.deadletter or in a
decision record with its reason; the good ones keep passing; the worker keeps running."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import pytest
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer

from streams import codecs, topics
from streams.automations import publish_automation
from streams.kafka import iter_records, produce_all, producer
from tests.helpers import BAD_AUTOMATIONS as AUTOMATIONS
from tests.helpers import PARTITIONS, decisions_by_event, now_ms, worker_logs
from tests.helpers import trigger as trigger_fields

pytestmark = pytest.mark.integration

YEAR_MS = 365 * 86_400_000


def trigger(event_id: str, phone: str, at: int, **over) -> bytes:
    return codecs.TRIGGER.encode(trigger_fields(event_id, phone, at, **over))


@dataclass
class Case:
    label: str
    key: bytes | None
    value: bytes | None
    # "dead:<reason>" for a dead letter, otherwise the outcome of the decision on the
    # event `label` (every case that gets a decision uses its label as event id).
    expect: str
    detail: str = ""  # a piece of the decision's or dead letter's detail


def catalogue(at: int) -> list[Case]:
    huge = "x" * 1_000_000
    return [
        Case("garbage", b"k", b"\x8f\x00\xffnot avro at all", "dead:undecodable"),
        Case("truncated", b"k", trigger("truncated", "+4540123401", at)[:-4],
             "dead:undecodable"),
        Case("json-missing-field", b"k",
             json.dumps({"event_id": "json-missing-field", "occurred_at_ms": at}).encode(),
             "dead:invalid_record", "phone"),
        Case("json-mistyped-field", b"k", json.dumps({
            "event_id": "json-mistyped-field", "phone": "+4540123402",
            "occurred_at_ms": "yesterday", "event_type": "signup"}).encode(),
             "dead:invalid_record", "occurred_at_ms"),
        Case("tombstone", b"k", None, "dead:tombstone"),
        Case("empty-number", b"k", trigger("empty-number", "", at), "invalid_number",
             "empty"),
        Case("letters", b"k", trigger("letters", "+1 412 535 abcd", at), "invalid_number",
             "letters_in_number"),
        Case("too-many-digits", b"k", trigger("too-many-digits", "+45 2012 34567", at),
             "invalid_number", "too_long"),
        Case("too-few-digits", b"k", trigger("too-few-digits", "+45 2012 345", at),
             "invalid_number", "too_short"),
        # Valid in the US, but the automation is Danish and no country code is given.
        Case("other-country", b"k", trigger("other-country", "(201) 555-0123", at),
             "invalid_number"),
        # Three ways to write one number outside Denmark's numbering plan: refused alike.
        Case("dk-spaced", b"k", trigger("dk-spaced", "+45 12 34 56 78", at),
             "invalid_number", "invalid_for_region"),
        Case("dk-00", b"k", trigger("dk-00", "004512345678", at), "invalid_number",
             "invalid_for_region"),
        Case("dk-plain", b"k", trigger("dk-plain", "+4512345678", at), "invalid_number",
             "invalid_for_region"),
        # The same three ways for a number in use, under three keys: one number, one
        # cooldown (which of them passes depends on the order of partitions).
        Case("same-1", b"a", trigger("same-1", "+45 20 12 34 56", at), "one of same"),
        Case("same-2", b"b", trigger("same-2", "004520123456", at), "one of same"),
        Case("same-3", b"c", trigger("same-3", "+4520123456", at), "one of same"),
        # The key names another number: the value's number is the one decided.
        Case("key-not-number", b"+4520999999", trigger("key-not-number", "+45 20 11 22 33", at),
             "passed"),
        Case("unknown-automation", b"k",
             trigger("unknown-automation", "+4540123403", at, automation_id="nope"),
             "unknown_automation", "nope"),
        Case("disabled-automation", b"k",
             trigger("disabled-automation", "+4540123404", at, event_type="paused_event"),
             "automation_disabled"),
        Case("far-future", b"k", trigger("far-future", "+4540123405", at + YEAR_MS),
             "future_trigger"),
        Case("years-ago", b"k", trigger("years-ago", "+4540123406", at - 3 * YEAR_MS),
             "stale_trigger"),
        Case("duplicate", b"k", trigger("duplicate", "+4540123407", at), "passed"),
        Case("duplicate", b"k", trigger("duplicate", "+4540123407", at), "passed"),
        # Used in the text, a 1 MB attribute makes a message no gateway takes.
        Case("huge-attribute", b"k",
             trigger("huge-attribute", "+4540123408", at, attributes={"name": huge}),
             "message_too_long"),
    ]


def wrong_partition_key() -> bytes:
    """An E.164 key that confluent-kafka's default partitioner (CRC32) puts on another
    partition than the murmur2 one Faust and Java clients use."""
    for i in range(100):
        key = f"+452055{i:04d}".encode()
        if zlib.crc32(key) % PARTITIONS != (murmur2(key) & 0x7FFFFFFF) % PARTITIONS:
            return key
    raise AssertionError("no key found")


def test_every_bad_input_gets_a_reason_and_good_input_keeps_flowing(
        bootstrap, start_worker, tmp_path):
    at = now_ms()
    cases = catalogue(at)
    for automation in AUTOMATIONS:
        publish_automation(bootstrap, automation)
    worker = start_worker()

    records, good = [], []
    for i, case in enumerate(cases):
        good.append(f"good-{i}")
        records.append((b"g", trigger(f"good-{i}", f"+45 20 12 {i:02d} 34", at), at))
        records.append((case.key, case.value, at))
    big = producer(bootstrap, **{"message.max.bytes": 4_000_000})
    produce_all(big, topics.TRIGGERS, records)

    # The same number twice: once with the murmur2 partitioner, once with librdkafka's
    # default; the second lands on another partition and must still meet the cooldown.
    key = wrong_partition_key()
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(key, trigger("partitioned-right", key.decode(), at), at)])
    delivered = []
    produce_all(Producer({"bootstrap.servers": bootstrap}), topics.TRIGGERS,
                [(key, trigger("partitioned-wrong", key.decode(), at), at)],
                on_delivery=lambda err, msg: delivered.append(msg.partition()), timeout_s=30)
    assert delivered == [zlib.crc32(key) % PARTITIONS]

    decided = {c.label for c in cases if not c.expect.startswith("dead:")}
    wanted = len(good) + len(decided) + 2
    try:
        by_event = decisions_by_event(bootstrap, wanted, timeout_s=180)
    except TimeoutError:
        pytest.fail(f"good triggers stopped flowing\n{worker_logs(tmp_path)}")

    assert [by_event[g][0]["outcome"] for g in good] == ["passed"] * len(good)
    for case in cases:
        if case.expect.startswith("dead:") or case.expect == "one of same":
            continue
        outcomes = {d["outcome"] for d in by_event[case.label]}
        assert outcomes == {case.expect}, (case.label, by_event[case.label])
        assert all(case.detail in d["detail"] for d in by_event[case.label]), case.label
    assert by_event["key-not-number"][0]["e164"] == "+4520112233"
    same = [by_event[f"same-{n}"][0] for n in (1, 2, 3)]
    assert {d["e164"] for d in same} == {"+4520123456"}
    assert sorted(d["outcome"] for d in same) == [
        "passed", "suppressed_cooldown", "suppressed_cooldown"]
    (first,) = [d for d in same if d["outcome"] == "passed"]
    assert all(d["cause_ref"] == first["decision_id"] for d in same if d is not first)
    # The duplicate: two records, one decision, the same in both.
    assert len(by_event["duplicate"]) == 2
    assert len({d["decision_id"] for d in by_event["duplicate"]}) == 1
    huge = by_event["huge-attribute"][0]
    assert "1000010 characters" in huge["detail"] and len(huge["detail"]) < 200
    right, wrong = by_event["partitioned-right"][0], by_event["partitioned-wrong"][0]
    assert sorted([right["outcome"], wrong["outcome"]]) == ["passed", "suppressed_cooldown"]
    assert right["source_partition"] != wrong["source_partition"]
    assert right["e164"] == wrong["e164"] == key.decode()

    dead = [codecs.DEAD_LETTER.decode(r.value)
            for r in iter_records(bootstrap, topics.DEADLETTER, idle_s=2.0)]
    expected_dead = sorted(c.expect.removeprefix("dead:") for c in cases
                           if c.expect.startswith("dead:"))
    assert sorted(d["reason"] for d in dead) == expected_dead
    for d in dead:
        assert d["source_topic"] == topics.TRIGGERS and d["source_offset"] >= 0 and d["detail"]
    for case in cases:
        if case.expect.startswith("dead:") and case.detail:
            reason = case.expect.removeprefix("dead:")
            assert any(d["reason"] == reason and case.detail in d["detail"] for d in dead), \
                (case.label, [d["detail"] for d in dead])
    assert worker.alive(), "bad input stopped the worker"
