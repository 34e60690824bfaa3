"""`streams.normalize.route`: every trigger and outside send becomes number events, decisions
or dead letters, each keyed and shaped as its topic expects."""

import json

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.normalize import Limits, Source, route
from streams.rule import decision_id_for

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
SKEW = 5 * 60 * 1000
MAX_AGE = 7 * 24 * HOUR
LIMITS = Limits(max_clock_skew_ms=SKEW, max_trigger_age_ms=MAX_AGE)
E164 = "+4520123456"

WELCOME = Automation("welcome", "Welcome", "DK", "Hi {name}", "ACME", event_type="signup",
                     cooldown_enabled=True, cooldown_ms=24 * HOUR)
VIP = Automation("vip-welcome", "VIP welcome", "DK", "Welcome, VIP", "ACME",
                 event_type="signup", segment="vip")
ORDER_VIP = Automation("order-vip", "VIP orders", "+45", "Thanks", "ACME", event_type="order",
                       segment="vip", window="mon-fri 09:00-20:00")
OTP = Automation("otp", "One-time code", "DK", "Code {code}", "ACME")
CATALOG = Catalog([WELCOME, VIP, ORDER_VIP, OTP])

# A number event goes into a bundle on the bundle topic; the rest go as they are.
OUTPUT_CODECS = {**topics.CODECS, topics.BY_NUMBER: codecs.NUMBER_EVENT}


def trigger(event_id="evt-1", phone="+45 20 12 34 56", occurred_at_ms=T0, attributes=None,
            **fields):
    return codecs.TRIGGER.encode({
        "event_id": event_id, "automation_id": None, "event_type": None, "segment": None,
        "phone": phone, "occurred_at_ms": occurred_at_ms,
        "attributes": {"name": "Bo"} if attributes is None else attributes, **fields,
    })


def sent(phone=E164, country=None, sent_at_ms=T0 - HOUR, decision_id=None, message_id="m-1"):
    return codecs.SENT.encode({
        "phone": phone, "country": country, "sent_at_ms": sent_at_ms, "origin": "crm",
        "decision_id": decision_id, "message_id": message_id,
    })


def source(value, topic=topics.TRIGGERS, key=b"producer-key"):
    return Source(topic, 3, 42, T0, key, value)


def route_one(value, topic=topics.TRIGGERS):
    outputs = route(source(value, topic), CATALOG, LIMITS)
    assert len(outputs) == 1, outputs
    return outputs[0]


def decision(event_id, automation_id, outcome, detail, e164=None):
    return {
        "decision_id": decision_id_for(event_id, automation_id or ""), "event_id": event_id,
        "automation_id": automation_id, "e164": e164, "outcome": outcome, "detail": detail,
        "decided_at_ms": T0, "cause_at_ms": None, "cause_origin": None, "cause_ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 3, "source_offset": 42,
        "release_at_ms": None,
    }


# --- triggers ---------------------------------------------------------------------------------


def test_trigger_by_event_type():
    out = route_one(trigger(event_type="signup"))
    assert out.topic == topics.BY_NUMBER
    assert out.key == E164.encode()
    assert out.value == {
        "kind": "trigger", "e164": E164, "at_ms": T0, "event_id": "evt-1",
        "decision_id": decision_id_for("evt-1", "welcome"), "automation_id": "welcome",
        "enabled": True, "cooldown_enabled": True, "cooldown_ms": 24 * HOUR,
        "window": "always", "timezone": "UTC", "text": "Hi Bo", "sender": "ACME",
        "origin": None, "ref": None,
        "source_topic": topics.TRIGGERS, "source_partition": 3, "source_offset": 42,
        "hold_outside_window": True, "defer_on_cooldown": False,
        "max_hold_ms": 7 * 24 * HOUR, "priority": 0, "transactional": False,
        "failures_to_opt_out": 0,
    }


def test_trigger_narrowed_by_segment():
    out = route_one(trigger(event_type="order", segment="vip"))
    assert (out.topic, out.value["automation_id"]) == (topics.BY_NUMBER, "order-vip")
    assert (out.value["window"], out.value["timezone"]) == (
        "mon-fri 09:00-20:00", "Europe/Copenhagen")


def test_trigger_outside_the_segment_matches_nothing():
    out = route_one(trigger(event_type="order", segment="basic"))
    assert (out.topic, out.key) == (topics.DECISIONS, b"evt-1")
    assert out.value == decision(
        "evt-1", None, "no_matching_automation",
        "no automation answers event type 'order' and segment 'basic'")


def test_trigger_by_automation_id_ignores_event_type():
    out = route_one(trigger(automation_id="otp", event_type="signup", attributes={"code": "42"}))
    assert out.topic == topics.BY_NUMBER
    assert out.value["automation_id"] == "otp"
    assert out.value["decision_id"] == decision_id_for("evt-1", "otp")
    assert (out.value["text"], out.value["cooldown_enabled"]) == ("Code 42", False)


def test_unknown_automation_id():
    out = route_one(trigger(automation_id="nope"))
    assert (out.topic, out.key) == (topics.DECISIONS, b"evt-1")
    assert out.value == decision("evt-1", "nope", "unknown_automation",
                                 "no automation has the id 'nope'")


def test_no_matching_automation():
    out = route_one(trigger(event_type="refund"))
    assert (out.topic, out.key) == (topics.DECISIONS, b"evt-1")
    assert out.value == decision(
        "evt-1", None, "no_matching_automation",
        "no automation answers event type 'refund' and segment None")


def test_trigger_for_two_automations():
    outputs = route(source(trigger(event_type="signup", segment="vip")), CATALOG, LIMITS)
    assert [(o.topic, o.key, o.value["automation_id"]) for o in outputs] == [
        (topics.BY_NUMBER, E164.encode(), "vip-welcome"),
        (topics.BY_NUMBER, E164.encode(), "welcome"),
    ]
    ids = [o.value["decision_id"] for o in outputs]
    assert ids == [decision_id_for("evt-1", "vip-welcome"), decision_id_for("evt-1", "welcome")]
    assert ids[0] != ids[1]
    again = route(source(trigger(event_type="signup", segment="vip")), CATALOG, LIMITS)
    assert [o.value["decision_id"] for o in again] == ids


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("", "empty_number"),
        ("call me", "letters_in_number"),
        ("20 12 34 56#", "bad_characters"),
        ("123", "too_short"),
        ("+45 20 12 34 56 78 90 12 34", "too_long"),
        ("+999 12345678", "unknown_country_code"),
    ],
)
def test_invalid_number(phone, reason):
    out = route_one(trigger(event_type="signup", phone=phone))
    assert (out.topic, out.key) == (topics.DECISIONS, b"evt-1")
    assert out.value["outcome"] == "invalid_number"
    assert out.value["e164"] is None
    assert out.value["automation_id"] == "welcome"
    assert out.value["decision_id"] == decision_id_for("evt-1", "welcome")
    assert out.value["detail"].startswith(f"{reason}: ")
    if phone.strip():
        assert phone not in out.value["detail"]


@pytest.mark.parametrize("phone", ["+45 20 12 34 56", "004520123456", "20123456", E164])
def test_written_forms_share_one_key(phone):
    out = route_one(trigger(event_type="signup", phone=phone))
    assert (out.topic, out.key, out.value["e164"]) == (topics.BY_NUMBER, b"+4520123456", E164)
    assert out.value["decision_id"] == decision_id_for("evt-1", "welcome")


def test_missing_message_attribute():
    out = route_one(trigger(event_type="signup", attributes={"city": "Aarhus"}))
    assert (out.topic, out.key) == (topics.DECISIONS, E164.encode())
    assert out.value == decision("evt-1", "welcome", "missing_attribute",
                                 "the message needs the attribute 'name'", E164)


@pytest.mark.parametrize(
    ("occurred_at_ms", "outcome", "detail"),
    [
        (T0 + SKEW + 1, "future_trigger",
         f"occurred_at is {SKEW + 1} ms after the trigger reached Kafka"),
        (T0 + 365 * 24 * HOUR, "future_trigger",
         f"occurred_at is {365 * 24 * HOUR} ms after the trigger reached Kafka"),
        (T0 - MAX_AGE - 1, "stale_trigger",
         f"occurred_at is {MAX_AGE + 1} ms before the trigger reached Kafka"),
        (T0 - 3 * 365 * 24 * HOUR, "stale_trigger",
         f"occurred_at is {3 * 365 * 24 * HOUR} ms before the trigger reached Kafka"),
    ],
)
def test_trigger_dated_outside_the_limits(occurred_at_ms, outcome, detail):
    out = route_one(trigger(event_type="signup", occurred_at_ms=occurred_at_ms))
    assert (out.topic, out.key) == (topics.DECISIONS, b"evt-1")
    assert out.value == decision("evt-1", "welcome", outcome, detail)


@pytest.mark.parametrize("occurred_at_ms", [T0 + SKEW, T0 - MAX_AGE])
def test_trigger_dated_at_the_limits_passes_on(occurred_at_ms):
    out = route_one(trigger(event_type="signup", occurred_at_ms=occurred_at_ms))
    assert (out.topic, out.value["at_ms"]) == (topics.BY_NUMBER, T0)


def test_json_trigger():
    data = json.dumps({"event_id": "evt-9", "event_type": "signup", "phone": "20123456",
                       "occurred_at_ms": T0, "attributes": {"name": "Ida"}}).encode()
    out = route_one(data)
    assert (out.topic, out.key, out.value["text"]) == (topics.BY_NUMBER, E164.encode(), "Hi Ida")


# --- dead letters -----------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [topics.TRIGGERS, topics.SENT])
def test_garbage_goes_to_the_dead_letter(topic):
    raw = b"\xff\xfe\x00 not a record"
    out = route_one(raw, topic)
    assert (out.topic, out.key) == (topics.DEADLETTER, b"producer-key")
    assert out.value == {
        "reason": "undecodable", "detail": out.value["detail"], "source_topic": topic,
        "source_partition": 3, "source_offset": 42, "key": b"producer-key", "value": raw,
        "failed_at_ms": T0,
    }
    assert out.value["detail"].startswith("not a valid Avro sms_cooldown.")


def test_tombstone_goes_to_the_dead_letter():
    out = route(Source(topics.TRIGGERS, 0, 7, T0, None, None), CATALOG, LIMITS)
    assert [(o.topic, o.key) for o in out] == [(topics.DEADLETTER, b"")]
    assert (out[0].value["reason"], out[0].value["key"], out[0].value["value"]) == (
        "tombstone", None, None)
    assert out[0].value["source_offset"] == 7


def test_empty_event_id_goes_to_the_dead_letter():
    out = route_one(trigger(event_id="  ", event_type="signup"))
    assert out.topic == topics.DEADLETTER
    assert (out.value["reason"], out.value["detail"]) == ("invalid_record", "event_id is empty")


# --- outside sends ----------------------------------------------------------------------------


def sent_event(at_ms=T0 - HOUR, ref="m-1", decision_id=None):
    return {
        "kind": "sent", "e164": E164, "at_ms": at_ms, "event_id": None,
        "decision_id": decision_id, "automation_id": None, "enabled": True,
        "cooldown_enabled": False, "cooldown_ms": 0, "window": "always", "timezone": "UTC",
        "text": None, "sender": None, "origin": "crm", "ref": ref,
        "source_topic": topics.SENT, "source_partition": 3, "source_offset": 42,
        "hold_outside_window": True, "defer_on_cooldown": False, "max_hold_ms": 0,
        "priority": 0, "transactional": False, "failures_to_opt_out": 0,
    }


@pytest.mark.parametrize(
    ("phone", "country"),
    [(E164, None), ("+45 20 12 34 56", None), ("004520123456", None), ("20123456", "DK"),
     ("20 12 34 56", "+45"), (E164, "SE")],
)
def test_sent(phone, country):
    out = route_one(sent(phone, country), topics.SENT)
    assert (out.topic, out.key) == (topics.BY_NUMBER, E164.encode())
    assert out.value == sent_event()


def test_sent_by_this_project_refers_to_its_decision():
    out = route_one(sent(decision_id="d-1", message_id="gw-1"), topics.SENT)
    assert out.value == sent_event(ref="d-1", decision_id="d-1")


def test_sent_without_any_reference():
    out = route_one(sent(message_id=None), topics.SENT)
    assert out.value["ref"] == ""


def test_sent_without_prefix_or_country():
    out = route_one(sent("20123456"), topics.SENT)
    assert (out.topic, out.key) == (topics.DEADLETTER, b"producer-key")
    assert out.value["reason"] == "invalid_number"
    assert out.value["detail"].startswith("missing_country_code: ")
    assert out.value["source_topic"] == topics.SENT


@pytest.mark.parametrize(("sent_at_ms", "topic"), [
    (T0 + SKEW + 1, topics.DEADLETTER), (T0 + SKEW, topics.BY_NUMBER)])
def test_sent_dated_in_the_future(sent_at_ms, topic):
    out = route_one(sent(sent_at_ms=sent_at_ms), topics.SENT)
    assert out.topic == topic
    if topic == topics.DEADLETTER:
        assert (out.value["reason"], out.value["detail"]) == (
            "future_send", f"sent_at is {SKEW + 1} ms after the record reached Kafka")


@pytest.mark.parametrize("country", ["XX", ""])
def test_sent_with_an_unknown_country(country):
    out = route_one(sent("20123456", country), topics.SENT)
    assert out.topic == topics.DEADLETTER


# --- every output fits its topic --------------------------------------------------------------

ALL_INPUTS = [
    (trigger(event_type="signup", segment="vip"), topics.TRIGGERS),
    (trigger(automation_id="nope"), topics.TRIGGERS),
    (trigger(event_type="refund"), topics.TRIGGERS),
    (trigger(event_type="signup", phone="123"), topics.TRIGGERS),
    (trigger(event_type="signup", attributes={}), topics.TRIGGERS),
    (trigger(event_type="signup", occurred_at_ms=T0 + HOUR), topics.TRIGGERS),
    (b"garbage", topics.TRIGGERS),
    (None, topics.TRIGGERS),
    (sent(), topics.SENT),
    (sent("20123456"), topics.SENT),
    (sent(sent_at_ms=T0 + HOUR), topics.SENT),
]


@pytest.mark.parametrize(("value", "topic"), ALL_INPUTS)
def test_every_output_encodes_with_its_topic_codec(value, topic):
    for out in route(source(value, topic), CATALOG, LIMITS):
        codec = OUTPUT_CODECS[out.topic]
        assert codec.decode(codec.encode(out.value)) == out.value
        assert isinstance(out.key, bytes)


# --- delivery outcomes ------------------------------------------------------------------------


def delivery(outcome="failed", ambiguous=False, automation_id="welcome"):
    return codecs.DELIVERY_OUTCOME.encode({
        "decision_id": "d-1", "event_id": "evt-1", "automation_id": automation_id,
        "e164": E164, "outcome": outcome, "ambiguous": ambiguous, "attempts": 1,
        "gateway": "gatewayapi", "message_id": None, "status": 400, "detail": "", "at_ms": T0,
    })


@pytest.mark.parametrize("outcome", ["failed", "given_up"])
def test_a_refused_send_releases_its_reservation(outcome):
    out = route_one(delivery(outcome), topics.DELIVERY)
    assert (out.topic, out.key) == (topics.BY_NUMBER, E164.encode())
    assert (out.value["kind"], out.value["decision_id"]) == ("release", "d-1")
    assert codecs.NUMBER_EVENT.decode(codecs.NUMBER_EVENT.encode(out.value)) == out.value


@pytest.mark.parametrize("value", [
    delivery("accepted"),                       # sms.sent reports it
    delivery("given_up", ambiguous=True),       # it may have reached the phone
])
def test_sends_that_may_have_gone_out_release_nothing(value):
    assert route(source(value, topics.DELIVERY), CATALOG, LIMITS) == []


def test_an_automation_whose_refused_sends_count_keeps_the_reservation():
    counting = Catalog([WELCOME.updated(failed_sends_count=True)])
    assert route(source(delivery(), topics.DELIVERY), counting, LIMITS) == []


def test_an_unreadable_delivery_outcome_is_dead_lettered():
    assert route_one(b"\x00garbage", topics.DELIVERY).topic == topics.DEADLETTER


def test_a_runaway_attribute_makes_the_message_too_long():
    out = route_one(trigger(event_type="signup", attributes={"name": "x" * 1_000_000}))
    assert (out.topic, out.value["outcome"], out.value["e164"]) == (
        topics.DECISIONS, "message_too_long", E164)
    assert len(codecs.DECISION.encode(out.value)) < 1000


def test_a_message_at_the_limit_passes():
    from streams.normalize import MAX_TEXT_CHARS

    out = route_one(trigger(event_type="signup", attributes={"name": "x" * (MAX_TEXT_CHARS - 3)}))
    assert out.topic == topics.BY_NUMBER and len(out.value["text"]) == MAX_TEXT_CHARS


def test_an_outside_send_with_an_overlong_origin_is_dead_lettered():
    long_origin = codecs.SENT.encode({
        "phone": E164, "country": None, "sent_at_ms": T0, "origin": "x" * 201,
        "decision_id": None, "message_id": None})
    out = route_one(long_origin, topics.SENT)
    assert (out.topic, out.value["reason"]) == (topics.DEADLETTER, "invalid_record")
