"""The cooldown agent in-process: number events in, decisions, send requests and dead letters
out, and the number's `last_sent` state after each event. Explicit event times, no broker."""

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.normalize import Limits, Source, route
from streams.rule import LastSend, NumberState, decision_id_for
from streams.state import decode_state

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
INTERVAL = 24 * HOUR
KEY = b"+4520123456"
LIMITS = Limits(max_clock_skew_ms=5 * 60 * 1000, max_trigger_age_ms=7 * 24 * HOUR)
CATALOG = Catalog([
    Automation("welcome", "Welcome", "DK", "Hi {name}", "ACME", event_type="signup",
               cooldown_enabled=True, cooldown_ms=INTERVAL),
    Automation("otp", "One-time code", "DK", "Your code", "ACME"),
])


def trigger_event(event_id, at_ms, automation_id="welcome", **changes):
    """A NumberEvent as the normalize step writes it for a trigger that reached Kafka at at_ms."""
    trigger = codecs.TRIGGER.encode({
        "event_id": event_id, "automation_id": automation_id, "event_type": None,
        "segment": None, "phone": "+45 20 12 34 56", "occurred_at_ms": at_ms,
        "attributes": {"name": "Bo"},
    })
    (out,) = route(Source(topics.TRIGGERS, 1, 7, at_ms, b"k", trigger), CATALOG, LIMITS)
    assert (out.topic, out.key) == (topics.BY_NUMBER, KEY)
    return out.key, codecs.NUMBER_EVENT.encode({**out.value, **changes})


def sent_event(at_ms, origin="crm", message_id="m-1"):
    sent = codecs.SENT.encode({"phone": "004520123456", "country": None, "sent_at_ms": at_ms,
                               "origin": origin, "decision_id": None, "message_id": message_id})
    (out,) = route(Source(topics.SENT, 0, 3, at_ms, None, sent), CATALOG, LIMITS)
    assert (out.topic, out.key) == (topics.BY_NUMBER, KEY)
    return out.key, codecs.NUMBER_EVENT.encode(out.value)


def did(event_id, automation_id="welcome"):
    return decision_id_for(event_id, automation_id)


def states_of(raw_states):
    return [decode_state(raw) for raw in raw_states]


def test_first_trigger_passes_reserves_and_emits(feed, cooldown_agent, decisions, outbox,
                                                 deadletter):
    states = feed(cooldown_agent, [trigger_event("evt-1", T0)], timestamp_ms=T0)
    assert states_of(states) == [NumberState(LastSend(T0, "welcome", did("evt-1")),
                                             (did("evt-1"),))]
    assert decisions.records == [(KEY, {
        "decision_id": did("evt-1"), "event_id": "evt-1", "automation_id": "welcome",
        "e164": "+4520123456", "outcome": "passed",
        "detail": "passed the cooldown; the number is reserved", "decided_at_ms": T0,
        "cause_at_ms": None, "cause_origin": None, "cause_ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 1, "source_offset": 7,
    })]
    assert outbox.records == [(KEY, {
        "decision_id": did("evt-1"), "event_id": "evt-1", "automation_id": "welcome",
        "e164": "+4520123456", "text": "Hi Bo", "sender": "ACME", "decided_at_ms": T0,
    })]
    assert deadletter.raw == []


def test_trigger_within_the_interval_is_suppressed(feed, cooldown_agent, decisions, outbox):
    at = T0 + INTERVAL - 1
    states = feed(cooldown_agent, [trigger_event("evt-1", T0), trigger_event("evt-2", at)],
                  timestamp_ms=at)
    assert states[1] == states[0]
    assert decisions.values[1] == {
        "decision_id": did("evt-2"), "event_id": "evt-2", "automation_id": "welcome",
        "e164": "+4520123456", "outcome": "suppressed_cooldown",
        "detail": f"the number got an SMS from welcome at {T0} (ref {did('evt-1')})",
        "decided_at_ms": at, "cause_at_ms": T0, "cause_origin": "welcome",
        "cause_ref": did("evt-1"),
        "source_topic": topics.TRIGGERS, "source_partition": 1, "source_offset": 7,
    }
    assert [v["decision_id"] for v in outbox.values] == [did("evt-1")]


def test_trigger_after_the_interval_passes(feed, cooldown_agent, decisions, outbox):
    at = T0 + INTERVAL
    states = feed(cooldown_agent, [trigger_event("evt-1", T0), trigger_event("evt-2", at)],
                  timestamp_ms=at)
    assert decode_state(states[1]) == NumberState(
        LastSend(at, "welcome", did("evt-2")), (did("evt-1"), did("evt-2")),
        LastSend(T0, "welcome", did("evt-1")))
    assert [(v["outcome"], v["cause_origin"]) for v in decisions.values] == [
        ("passed", None), ("passed", None)]
    assert [(v["decision_id"], v["decided_at_ms"]) for v in outbox.values] == [
        (did("evt-1"), T0), (did("evt-2"), at)]


def test_outside_send_suppresses_a_later_trigger(feed, cooldown_agent, decisions, outbox):
    states = feed(cooldown_agent, [sent_event(T0), trigger_event("evt-1", T0 + HOUR)],
                  timestamp_ms=T0 + HOUR)
    assert states_of(states) == [NumberState(LastSend(T0, "crm", "m-1"))] * 2
    assert [(v["outcome"], v["cause_at_ms"], v["cause_origin"], v["cause_ref"])
            for v in decisions.values] == [("suppressed_cooldown", T0, "crm", "m-1")]
    assert outbox.raw == []


def test_replayed_trigger_passes_again_without_a_second_reservation(
        feed, cooldown_agent, decisions, outbox):
    first = trigger_event("evt-1", T0)
    states = feed(cooldown_agent, [first, trigger_event("evt-2", T0 + 1), first],
                  timestamp_ms=T0)
    assert states[2] == states[1] == states[0]
    assert [(v["decision_id"], v["outcome"]) for v in decisions.values] == [
        (did("evt-1"), "passed"), (did("evt-2"), "suppressed_cooldown"),
        (did("evt-1"), "passed")]
    # The connector sends one decision_id once; the repeat request is the same record.
    assert outbox.raw[1] == outbox.raw[0]
    assert len(outbox.raw) == 2


def test_cooldown_off_passes_and_reserves(feed, cooldown_agent, decisions, outbox):
    states = feed(cooldown_agent, [
        trigger_event("evt-1", T0, "otp"),
        trigger_event("evt-2", T0 + 1, "otp"),
        trigger_event("evt-3", T0 + 2, "welcome"),
    ], timestamp_ms=T0)
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
    states = feed(cooldown_agent, [trigger_event("evt-1", T0, enabled=False)], timestamp_ms=T0)
    assert states == [None]
    assert [(v["outcome"], v["detail"]) for v in decisions.values] == [
        ("automation_disabled", "the automation is disabled")]
    assert outbox.raw == []


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (b"\xff\xfe garbage", "undecodable", "not a valid Avro sms_cooldown.NumberEvent: "),
        (None, "tombstone", "a null value where a sms_cooldown.NumberEvent was expected"),
    ],
)
def test_bad_bytes_go_to_the_dead_letter_and_the_agent_goes_on(
        feed, cooldown_agent, decisions, outbox, deadletter, bad, reason, detail):
    states = feed(cooldown_agent, [
        trigger_event("evt-1", T0), (KEY, bad), trigger_event("evt-2", T0 + INTERVAL),
    ], timestamp_ms=T0 + 5)
    (dead,) = deadletter.values
    assert dead["detail"].startswith(detail)
    assert {**dead, "detail": ""} == {
        "reason": reason, "detail": "", "source_topic": topics.BY_NUMBER,
        "source_partition": 0, "source_offset": 1, "key": KEY, "value": bad,
        "failed_at_ms": T0 + 5,
    }
    assert deadletter.records[0][0] == KEY
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
    feed(cooldown_agent, [trigger_event("evt-1", T0, **changes), trigger_event("evt-2", T0)],
         timestamp_ms=T0)
    assert [v["source_offset"] for v in deadletter.values] == [0]
    assert [v["decision_id"] for v in decisions.values] == [did("evt-2")]
    # the bad one reserved nothing: the next trigger for the number passes
    assert [v["decision_id"] for v in outbox.values] == [did("evt-2")]
