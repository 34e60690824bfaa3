"""The normalize agent in-process: raw producer bytes in, E.164-keyed number events, decisions
and dead letters out; and its output fed on to the cooldown agent. No broker."""

import json

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.rule import decision_id_for

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEY = b"+4520123456"


@pytest.fixture
def catalog():
    return Catalog([Automation("welcome", "Welcome", "DK", "Hi {name}", "ACME",
                               event_type="signup", cooldown_enabled=True,
                               cooldown_ms=24 * 3_600_000)])


def trigger(event_id="evt-1", **fields):
    return json.dumps({"event_id": event_id, "event_type": "signup", "phone": "20 12 34 56",
                       "occurred_at_ms": T0 - 1000, "attributes": {"name": "Bo"},
                       **fields}).encode()


def test_trigger_is_rekeyed_by_number(feed, normalize_agent, by_number, deadletter):
    feed(normalize_agent, [(b"customer-9", trigger())], timestamp_ms=T0, topic=topics.TRIGGERS)
    assert by_number.records == [(KEY, {
        "kind": "trigger", "e164": "+4520123456", "at_ms": T0, "event_id": "evt-1",
        "decision_id": decision_id_for("evt-1", "welcome"), "automation_id": "welcome",
        "enabled": True, "cooldown_enabled": True, "cooldown_ms": 24 * 3_600_000,
        "window": "always", "timezone": "UTC", "text": "Hi Bo", "sender": "ACME",
        "origin": None, "ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 0, "source_offset": 0,
    })]
    assert deadletter.raw == []


def test_outside_send_is_rekeyed_by_number(feed, normalize_agent, by_number):
    sent = codecs.SENT.encode({"phone": "+45 20 12 34 56", "country": None,
                               "sent_at_ms": T0 - 5, "origin": "crm", "decision_id": None,
                               "message_id": "m-1"})
    feed(normalize_agent, [(None, sent)], timestamp_ms=T0, topic=topics.SENT)
    ((key, value),) = by_number.records
    assert (key, value["kind"], value["at_ms"], value["origin"], value["ref"]) == (
        KEY, "sent", T0 - 5, "crm", "m-1")
    assert value["source_topic"] == topics.SENT


def test_unknown_automation_is_decided_at_once(feed, normalize_agent, by_number, decisions):
    feed(normalize_agent, [(None, trigger(automation_id="nope"))], timestamp_ms=T0,
         topic=topics.TRIGGERS)
    assert by_number.raw == []
    ((key, value),) = decisions.records
    assert (key, value["outcome"], value["automation_id"], value["decided_at_ms"]) == (
        b"evt-1", "unknown_automation", "nope", T0)


def test_garbage_goes_to_the_dead_letter_and_the_agent_goes_on(
        feed, normalize_agent, by_number, deadletter):
    feed(normalize_agent, [(b"k1", b"\x00garbage"), (b"k2", trigger("evt-2"))],
         timestamp_ms=T0, topic=topics.TRIGGERS)
    assert deadletter.records == [(b"k1", {
        "reason": "undecodable", "detail": deadletter.values[0]["detail"],
        "source_topic": topics.TRIGGERS, "source_partition": 0, "source_offset": 0,
        "key": b"k1", "value": b"\x00garbage", "failed_at_ms": T0,
    })]
    assert [(key, value["event_id"], value["source_offset"])
            for key, value in by_number.records] == [(KEY, "evt-2", 1)]


def test_end_to_end_in_process(feed, normalize_agent, cooldown_agent, by_number, decisions,
                               outbox):
    feed(normalize_agent, [(None, trigger("evt-1")), (None, trigger("evt-2"))],
         timestamp_ms=T0, topic=topics.TRIGGERS)
    feed(cooldown_agent, by_number.raw, timestamp_ms=T0)
    assert [(key, v["event_id"], v["outcome"], v["cause_ref"])
            for key, v in decisions.records] == [
        (KEY, "evt-1", "passed", None),
        (KEY, "evt-2", "suppressed_cooldown", decision_id_for("evt-1", "welcome")),
    ]
    assert [(key, v["e164"], v["text"]) for key, v in outbox.records] == [
        (KEY, "+4520123456", "Hi Bo")]


def test_outside_send_with_an_unknown_country(feed, normalize_agent, by_number, deadletter):
    sent = codecs.SENT.encode({"phone": "20123456", "country": "XX", "sent_at_ms": T0,
                               "origin": "crm", "decision_id": None, "message_id": None})
    feed(normalize_agent, [(None, sent)], timestamp_ms=T0, topic=topics.SENT)
    assert [v["reason"] for v in deadletter.values] == ["invalid_record"]
