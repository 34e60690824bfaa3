"""The cooldown agent in-process: bundles of number events in; decisions, send requests,
changelog records and dead letters out; and the number's `last_sent` state in the store
after each bundle. Explicit event times, no broker."""

from dataclasses import replace

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.bundles import encode_bundles, partition_for
from streams.normalize import Limits, Source, route
from streams.rule import LastSend, NumberState, decision_id_for
from streams.settings import DEFAULT_PARTITIONS
from streams.state import decode_state

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
INTERVAL = 24 * HOUR
KEY = b"+4520123456"
OTHER = b"+4520123457"
# The in-process app has the default partition count.
PARTITION = partition_for(KEY, DEFAULT_PARTITIONS)
LIMITS = Limits(max_clock_skew_ms=5 * 60 * 1000, max_trigger_age_ms=7 * 24 * HOUR)
CATALOG = Catalog([
    Automation("welcome", "Welcome", "DK", "Hi {name}", "ACME", event_type="signup",
               cooldown_enabled=True, cooldown_ms=INTERVAL),
    Automation("otp", "One-time code", "DK", "Your code", "ACME"),
])


def trigger_event(event_id, at_ms, automation_id="welcome", phone="+45 20 12 34 56",
                  **changes):
    """The number event ingest makes of a trigger that reached Kafka at at_ms."""
    trigger = codecs.TRIGGER.encode({
        "event_id": event_id, "automation_id": automation_id, "event_type": None,
        "segment": None, "phone": phone, "occurred_at_ms": at_ms,
        "attributes": {"name": "Bo"},
    })
    (out,) = route(Source(topics.TRIGGERS, 1, 7, at_ms, b"k", trigger), CATALOG, LIMITS)
    assert out.topic == topics.BY_NUMBER
    return replace(out.record, **changes)


def sent_event(at_ms, origin="crm", message_id="m-1"):
    sent = codecs.SENT.encode({"phone": "004520123456", "country": None, "sent_at_ms": at_ms,
                               "origin": origin, "decision_id": None, "message_id": message_id})
    (out,) = route(Source(topics.SENT, 0, 3, at_ms, None, sent), CATALOG, LIMITS)
    assert (out.topic, out.key) == (topics.BY_NUMBER, KEY)
    return out.record


def bundle(*events, partition=PARTITION):
    (encoded,) = encode_bundles(list(events), 900_000)
    return None, encoded, partition


def did(event_id, automation_id="welcome"):
    return decision_id_for(event_id, automation_id)


def states_of(raw_states):
    return [decode_state(raw) for raw in raw_states]


def test_first_trigger_passes_reserves_and_emits(feed, cooldown_agent, decisions, outbox,
                                                 deadletter):
    states = feed(cooldown_agent, [bundle(trigger_event("evt-1", T0))], timestamp_ms=T0,
                  watch=KEY)
    assert states_of(states) == [NumberState(LastSend(T0, "welcome", did("evt-1")),
                                             (did("evt-1"),))]
    assert decisions.records == [(KEY, {
        "decision_id": did("evt-1"), "event_id": "evt-1", "automation_id": "welcome",
        "e164": "+4520123456", "outcome": "passed",
        "detail": "passed the cooldown; the number is reserved", "decided_at_ms": T0,
        "cause_at_ms": None, "cause_origin": None, "cause_ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 1, "source_offset": 7,
        "release_at_ms": None,
    })]
    assert outbox.records == [(KEY, {
        "decision_id": did("evt-1"), "event_id": "evt-1", "automation_id": "welcome",
        "e164": "+4520123456", "text": "Hi Bo", "sender": "ACME", "decided_at_ms": T0,
    })]
    assert deadletter.raw == []


def test_the_changelog_gets_the_stores_bytes_on_the_bundles_partition(
        feed, cooldown_agent, changelog_records, store):
    feed(cooldown_agent, [bundle(trigger_event("evt-1", T0))], timestamp_ms=T0, watch=KEY)
    assert changelog_records.raw == [(KEY, store[KEY])]
    assert changelog_records.partitions == [PARTITION]


def test_trigger_within_the_interval_is_suppressed(feed, cooldown_agent, decisions, outbox):
    at = T0 + INTERVAL - 1
    states = feed(cooldown_agent, [bundle(trigger_event("evt-1", T0)),
                                   bundle(trigger_event("evt-2", at))],
                  timestamp_ms=at, watch=KEY)
    assert states[1] == states[0]
    assert decisions.values[1] == {
        "decision_id": did("evt-2"), "event_id": "evt-2", "automation_id": "welcome",
        "e164": "+4520123456", "outcome": "suppressed_cooldown",
        "detail": f"the number got an SMS from welcome at {T0} (ref {did('evt-1')})",
        "decided_at_ms": at, "cause_at_ms": T0, "cause_origin": "welcome",
        "cause_ref": did("evt-1"),
        "source_topic": topics.TRIGGERS, "source_partition": 1, "source_offset": 7,
        "release_at_ms": None,
    }
    assert [v["decision_id"] for v in outbox.values] == [did("evt-1")]


def test_events_of_one_bundle_are_decided_in_order_against_each_other(
        feed, cooldown_agent, decisions, outbox, changelog_records, store):
    at = T0 + INTERVAL
    feed(cooldown_agent, [bundle(
        trigger_event("evt-1", T0), trigger_event("evt-9", T0, phone="20123457"),
        trigger_event("evt-2", T0 + 1), sent_event(T0 + 2), trigger_event("evt-3", at),
    )], timestamp_ms=at, watch=KEY)
    assert [(v["event_id"], v["outcome"]) for v in decisions.values] == [
        ("evt-1", "passed"), ("evt-9", "passed"), ("evt-2", "suppressed_cooldown"),
        ("evt-3", "suppressed_cooldown")]
    assert decisions.values[3]["cause_origin"] == "crm"
    assert [v["event_id"] for v in outbox.values] == ["evt-1", "evt-9"]
    # One changelog record per number the bundle changed, with its final state.
    assert sorted(changelog_records.raw) == sorted([(KEY, store[KEY]), (OTHER, store[OTHER])])
    assert decode_state(store[KEY]).last == LastSend(T0 + 2, "crm", "m-1")


def test_trigger_after_the_interval_passes(feed, cooldown_agent, decisions, outbox):
    at = T0 + INTERVAL
    states = feed(cooldown_agent, [bundle(trigger_event("evt-1", T0)),
                                   bundle(trigger_event("evt-2", at))],
                  timestamp_ms=at, watch=KEY)
    assert decode_state(states[1]) == NumberState(
        LastSend(at, "welcome", did("evt-2")), (did("evt-1"), did("evt-2")),
        LastSend(T0, "welcome", did("evt-1")))
    assert [(v["outcome"], v["cause_origin"]) for v in decisions.values] == [
        ("passed", None), ("passed", None)]
    assert [(v["decision_id"], v["decided_at_ms"]) for v in outbox.values] == [
        (did("evt-1"), T0), (did("evt-2"), at)]


def test_outside_send_suppresses_a_later_trigger(feed, cooldown_agent, decisions, outbox):
    states = feed(cooldown_agent, [bundle(sent_event(T0)),
                                   bundle(trigger_event("evt-1", T0 + HOUR))],
                  timestamp_ms=T0 + HOUR, watch=KEY)
    assert states_of(states) == [NumberState(LastSend(T0, "crm", "m-1"))] * 2
    assert [(v["outcome"], v["cause_at_ms"], v["cause_origin"], v["cause_ref"])
            for v in decisions.values] == [("suppressed_cooldown", T0, "crm", "m-1")]
    assert outbox.raw == []


def test_a_replayed_bundle_passes_again_without_a_second_reservation(
        feed, cooldown_agent, decisions, outbox, changelog_records):
    first = bundle(trigger_event("evt-1", T0), trigger_event("evt-2", T0 + 1))
    states = feed(cooldown_agent, [first, first], timestamp_ms=T0, watch=KEY)
    assert states[1] == states[0]
    assert [(v["decision_id"], v["outcome"]) for v in decisions.values] == [
        (did("evt-1"), "passed"), (did("evt-2"), "suppressed_cooldown")] * 2
    # The connector sends one decision_id once; the repeat request is the same record.
    assert outbox.raw[1] == outbox.raw[0]
    assert len(outbox.raw) == 2
    # The replay changed no state, so it wrote nothing to the changelog.
    assert len(changelog_records.raw) == 1


def test_cooldown_off_passes_and_reserves(feed, cooldown_agent, decisions, outbox):
    states = feed(cooldown_agent, [
        bundle(trigger_event("evt-1", T0, "otp")),
        bundle(trigger_event("evt-2", T0 + 1, "otp")),
        bundle(trigger_event("evt-3", T0 + 2, "welcome")),
    ], timestamp_ms=T0, watch=KEY)
    # Passes without cooldown reserve the number too: their SMS count for the others.
    assert [state.last for state in states_of(states)] == [
        LastSend(T0, "otp", did("evt-1", "otp")),
        LastSend(T0 + 1, "otp", did("evt-2", "otp")),
        LastSend(T0 + 1, "otp", did("evt-2", "otp")),
    ]
    assert [(v["outcome"], v["cause_origin"], v["cause_ref"]) for v in decisions.values] == [
        ("passed", None, None), ("passed", None, None),
        ("suppressed_cooldown", "otp", did("evt-2", "otp"))]
    assert [v["text"] for v in outbox.values] == ["Your code", "Your code"]


def test_disabled_automation(feed, cooldown_agent, decisions, outbox):
    states = feed(cooldown_agent, [bundle(trigger_event("evt-1", T0, enabled=False))],
                  timestamp_ms=T0, watch=KEY)
    assert states == [None]
    assert [(v["outcome"], v["detail"]) for v in decisions.values] == [
        ("automation_disabled", "the automation is disabled")]
    assert outbox.raw == []


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (b"\xff\xfe garbage", "undecodable",
         "not a valid Avro sms_cooldown.NumberEventBundle: "),
        (None, "tombstone", "a null value where a sms_cooldown.NumberEventBundle was expected"),
    ],
)
def test_bad_bytes_go_to_the_dead_letter_and_the_agent_goes_on(
        feed, cooldown_agent, decisions, outbox, deadletter, bad, reason, detail):
    states = feed(cooldown_agent, [
        bundle(trigger_event("evt-1", T0)), (None, bad, PARTITION),
        bundle(trigger_event("evt-2", T0 + INTERVAL)),
    ], timestamp_ms=T0 + 5, watch=KEY)
    (dead,) = deadletter.values
    assert dead["detail"].startswith(detail)
    assert {**dead, "detail": ""} == {
        "reason": reason, "detail": "", "source_topic": topics.BY_NUMBER,
        "source_partition": PARTITION, "source_offset": 1, "key": None, "value": bad,
        "failed_at_ms": T0 + 5,
    }
    assert states[1] == states[0]
    assert [v["decision_id"] for v in outbox.values] == [did("evt-1"), did("evt-2")]
    assert len(decisions.raw) == 2


@pytest.mark.parametrize("changes", [
    {"window": "sometimes"},
    {"timezone": "Mars/Olympus", "window": "daily 09:00-20:00"},
    {"cooldown_enabled": True, "cooldown_ms": 0},
    {"decision_id": None},
    {"text": None},
])
def test_number_event_with_bad_terms_goes_to_the_dead_letter(
        feed, cooldown_agent, decisions, outbox, deadletter, changes):
    bad = replace(trigger_event("evt-1", T0, **changes), source_offset=6)
    feed(cooldown_agent, [bundle(bad, trigger_event("evt-2", T0))], timestamp_ms=T0, watch=KEY)
    # The dead letter names the trigger the event came from, and holds the event.
    (dead,) = deadletter.values
    assert (dead["reason"], dead["source_topic"], dead["source_partition"],
            dead["source_offset"], dead["key"]) == ("invalid_record", topics.TRIGGERS, 1, 6, KEY)
    assert codecs.NUMBER_EVENT.decode(dead["value"])["event_id"] == "evt-1"
    assert [v["decision_id"] for v in decisions.values] == [did("evt-2")]
    # the bad one reserved nothing: the next trigger for the number passes
    assert [v["decision_id"] for v in outbox.values] == [did("evt-2")]
