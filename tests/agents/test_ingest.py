"""Ingest's batch step in-process: raw producer records in; bundles on the partition of
each number, decisions and dead letters out; the offsets to commit; and its bundles fed
on to the cooldown agent. No broker."""

import json
from dataclasses import replace

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.bundles import decode_bundle, partition_for
from streams.rule import decision_id_for
from streams.settings import DEFAULT_PARTITIONS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEY = b"+4520123456"


@pytest.fixture
def catalog():
    return Catalog([Automation("welcome", "Welcome", "DK", "Hi {name}", "ACME",
                               event_type="signup", cooldown_enabled=True,
                               cooldown_ms=24 * 3_600_000)])


def trigger(event_id="evt-1", phone="20 12 34 56", **fields):
    return json.dumps({"event_id": event_id, "event_type": "signup", "phone": phone,
                       "occurred_at_ms": T0 - 1000, "attributes": {"name": "Bo"},
                       **fields}).encode()


def events_of(bundles):
    """(partition, event) of every event in the bundles written, in order."""
    return [(partition, event) for (_, value), partition in zip(bundles.raw, bundles.partitions,
                                                                strict=True)
            for event in decode_bundle(value)]


def test_a_trigger_becomes_a_number_event_in_a_bundle_on_its_numbers_partition(
        ingest, message, bundles, deadletter):
    commit = ingest.batch([message(topics.TRIGGERS, 2, 40, T0, b"customer-9", trigger())])
    ((partition, event),) = events_of(bundles)
    assert partition == partition_for(KEY, DEFAULT_PARTITIONS)
    assert event.to_dict() == {
        "kind": "trigger", "e164": "+4520123456", "at_ms": T0, "event_id": "evt-1",
        "decision_id": decision_id_for("evt-1", "welcome"), "automation_id": "welcome",
        "enabled": True, "cooldown_enabled": True, "cooldown_ms": 24 * 3_600_000,
        "window": "always", "timezone": "UTC", "text": "Hi Bo", "sender": "ACME",
        "origin": None, "ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 2, "source_offset": 40,
        "hold_outside_window": True, "defer_on_cooldown": False,
        "max_hold_ms": 7 * 24 * 3_600_000, "priority": 0, "transactional": False,
        "failures_to_opt_out": 0,
    }
    assert commit == {(topics.TRIGGERS, 2): 41}
    assert deadletter.raw == []


def test_one_bundle_per_partition_per_batch_in_input_order(ingest, message, bundles):
    phones = [f"2012345{n}" for n in range(10)]
    ingest.batch([message(topics.TRIGGERS, 0, n, T0, None, trigger(f"evt-{n}", phone))
                  for n, phone in enumerate(phones)])
    assert len(bundles.raw) == len(set(bundles.partitions))
    events = events_of(bundles)
    assert sorted(event.event_id for _, event in events) == [f"evt-{n}" for n in range(10)]
    for partition, event in events:
        assert partition == partition_for(event.e164.encode(), DEFAULT_PARTITIONS)
    for partition in set(bundles.partitions):
        offsets = [event.source_offset for p, event in events if p == partition]
        assert offsets == sorted(offsets)


def test_bundles_are_split_to_stay_under_their_size(ingest, message, bundles, settings):
    ingest.settings = replace(settings, bundle_max_bytes=10_000)
    ingest.batch([message(topics.TRIGGERS, 0, n, T0, None, trigger(f"evt-{n}"))
                  for n in range(300)])
    assert len(bundles.raw) > 1
    assert all(len(value) <= 10_000 for _, value in bundles.raw)
    assert [event.event_id for _, event in events_of(bundles)] == [
        f"evt-{n}" for n in range(300)]


def test_outside_send_becomes_a_number_event(ingest, message, bundles):
    sent = codecs.SENT.encode({"phone": "+45 20 12 34 56", "country": None,
                               "sent_at_ms": T0 - 5, "origin": "crm", "decision_id": None,
                               "message_id": "m-1"})
    ingest.batch([message(topics.SENT, 1, 3, T0, None, sent)])
    ((_, event),) = events_of(bundles)
    assert (event.e164, event.kind, event.at_ms, event.origin, event.ref, event.source_topic) \
        == ("+4520123456", "sent", T0 - 5, "crm", "m-1", topics.SENT)


def test_unknown_automation_is_decided_at_once(ingest, message, bundles, decisions):
    ingest.batch([message(topics.TRIGGERS, 0, 0, T0, None, trigger(automation_id="nope"))])
    assert bundles.raw == []
    ((key, value),) = decisions.records
    assert (key, value["outcome"], value["automation_id"], value["decided_at_ms"]) == (
        b"evt-1", "unknown_automation", "nope", T0)


def test_garbage_goes_to_the_dead_letter_and_the_batch_goes_on(
        ingest, message, bundles, deadletter):
    commit = ingest.batch([message(topics.TRIGGERS, 0, 0, T0, b"k1", b"\x00garbage"),
                           message(topics.TRIGGERS, 0, 1, T0, b"k2", trigger("evt-2"))])
    assert deadletter.records == [(b"k1", {
        "reason": "undecodable", "detail": deadletter.values[0]["detail"],
        "source_topic": topics.TRIGGERS, "source_partition": 0, "source_offset": 0,
        "key": b"k1", "value": b"\x00garbage", "failed_at_ms": T0,
    })]
    assert [(event.event_id, event.source_offset) for _, event in events_of(bundles)] == [
        ("evt-2", 1)]
    assert commit == {(topics.TRIGGERS, 0): 2}


def test_outside_send_with_an_unknown_country(ingest, message, deadletter):
    sent = codecs.SENT.encode({"phone": "20123456", "country": "XX", "sent_at_ms": T0,
                               "origin": "crm", "decision_id": None, "message_id": None})
    ingest.batch([message(topics.SENT, 0, 0, T0, None, sent)])
    assert [v["reason"] for v in deadletter.values] == ["invalid_record"]


def test_end_to_end_in_process(ingest, message, bundles, feed, cooldown_agent, decisions,
                               outbox):
    ingest.batch([message(topics.TRIGGERS, 0, 0, T0, None, trigger("evt-1")),
                  message(topics.TRIGGERS, 1, 0, T0, None, trigger("evt-2", "+4520123456"))])
    feed(cooldown_agent, [(key, value, partition) for (key, value), partition
                          in zip(bundles.raw, bundles.partitions, strict=True)],
         timestamp_ms=T0)
    assert [(key, v["event_id"], v["outcome"], v["cause_ref"])
            for key, v in decisions.records] == [
        (KEY, "evt-1", "passed", None),
        (KEY, "evt-2", "suppressed_cooldown", decision_id_for("evt-1", "welcome")),
    ]
    assert [(key, v["e164"], v["text"]) for key, v in outbox.records] == [
        (KEY, "+4520123456", "Hi Bo")]
