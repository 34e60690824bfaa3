"""Opt-outs: their precedence over transactional automations, held messages and the
cooldown, in `step`; their state encoding; their records as ingest routes them."""

import json
from dataclasses import replace

import pytest

from streams import codecs, topics
from streams.automations import Catalog
from streams.normalize import Limits, route
from streams.optouts import opt_out_record
from streams.outcomes import (
    DEFERRED_COOLDOWN,
    HELD_WINDOW,
    INVALID_NUMBER,
    OPTED_OUT,
    PASSED,
    RELEASED,
    SUPPRESSED_COOLDOWN,
)
from streams.records import (
    DUE_EVENT,
    FAILED_EVENT,
    OPT_OUT_EVENT,
    NumberEvent,
    OptOut,
    SendRequest,
    Source,
)
from streams.rule import LastSend, NumberState, OptedOut, decision_id_for, opted_out_after
from streams.state import decode_state, encode_state
from streams.step import step

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
HOUR = 3_600_000
E164 = "+4520123456"


def trigger(event_id="evt-1", at_ms=T0, automation_id="welcome", **changes):
    event = NumberEvent(
        "trigger", E164, at_ms, "sms.triggers", 1, 7, event_id=event_id,
        decision_id=decision_id_for(event_id, automation_id), automation_id=automation_id,
        cooldown_enabled=True, cooldown_ms=24 * HOUR, text="Hi Bo", sender="ACME",
        max_hold_ms=48 * HOUR)
    return replace(event, **changes)


def opt_out(at_ms=T0, opted_out=True, channel="cli"):
    return NumberEvent(OPT_OUT_EVENT, E164, at_ms, "sms.optouts", 0, 3, enabled=opted_out,
                       origin=channel)


def due(at_ms):
    return NumberEvent(DUE_EVENT, E164, at_ms, "", -1, -1)


def outcomes(records):
    return [r.outcome for r in records if not isinstance(r, SendRequest)]


def sends(records):
    return [r for r in records if isinstance(r, SendRequest)]


OPTED = NumberState(opted_out=OptedOut(T0 - HOUR, "sms_reply"))


def test_an_opted_out_number_gets_opted_out_and_keeps_its_state():
    state, records = step(OPTED, trigger())
    assert state == OPTED
    assert outcomes(records) == [OPTED_OUT]
    assert records[0].detail == f"the number opted out of SMS at {T0 - HOUR} (by sms_reply)"


def test_opted_out_comes_before_the_cooldown():
    in_cooldown = replace(OPTED, last=LastSend(T0 - 60_000, "crm", "m-1"))
    _, records = step(in_cooldown, trigger())
    assert outcomes(records) == [OPTED_OUT]


def test_a_transactional_automation_still_texts_an_opted_out_number_under_its_cooldown():
    state, records = step(OPTED, trigger(transactional=True))
    assert outcomes(records) == [PASSED] and len(sends(records)) == 1
    assert state is not None and state.opted_out == OPTED.opted_out
    _, records = step(state, trigger("evt-2", T0 + HOUR, transactional=True))
    assert outcomes(records) == [SUPPRESSED_COOLDOWN]


def test_an_opt_out_ends_the_held_messages_that_are_not_transactional():
    window = {"window": "mon-fri 09:00-17:00", "timezone": "Europe/Copenhagen"}
    state, _ = step(None, trigger("evt-1", **window))
    state, _ = step(state, trigger("evt-2", automation_id="receipt", transactional=True,
                                   **window))
    assert [h.reason for h in state.held] == [HELD_WINDOW, HELD_WINDOW]
    state, records = step(state, opt_out(T0 + 1000))
    assert outcomes(records) == [OPTED_OUT]
    assert records[0].decision_id == decision_id_for("evt-1", "welcome")
    assert [h.automation_id for h in state.held] == ["receipt"]
    # The transactional one goes out when the window opens (08:00 UTC = 09:00 there).
    state, records = step(state, due(T0 + 8 * HOUR))
    assert outcomes(records) == [RELEASED] and sends(records)[0].automation_id == "receipt"


def test_a_deferral_held_before_the_opt_out_is_ended_when_it_comes_due():
    before = NumberState(last=LastSend(T0 - HOUR, "crm", "m-1"))
    state, records = step(before, trigger(defer_on_cooldown=True))
    assert outcomes(records) == [DEFERRED_COOLDOWN]
    # Only a hold that reached the state by some other path than the trigger could be
    # due after an opt-out; the release still checks.
    state = replace(state, opted_out=OptedOut(T0, "cli"))
    state, records = step(state, due(T0 + 23 * HOUR))
    assert outcomes(records) == [OPTED_OUT] and not sends(records) and not state.held


def test_a_pass_replayed_after_the_opt_out_passes_again():
    state, records = step(None, trigger())
    assert outcomes(records) == [PASSED]
    state, _ = step(state, opt_out(T0 + 10))
    _, replayed = step(state, trigger())
    assert outcomes(replayed) == [PASSED] and len(sends(replayed)) == 1


def test_opting_back_in_undoes_an_opt_out_dated_no_later():
    state, _ = step(None, opt_out(T0))
    state, _ = step(state, opt_out(T0 - 1, opted_out=False))  # came late: no effect
    assert state.opted_out == OptedOut(T0, "cli")
    state, _ = step(state, opt_out(T0 + HOUR, opted_out=True, channel="sms_reply"))
    assert state.opted_out == OptedOut(T0, "cli")  # since the first time
    state, _ = step(state, opt_out(T0 + 2 * HOUR, opted_out=False))
    assert state.opted_out is None
    _, records = step(state, trigger(at_ms=T0 + 3 * HOUR))
    assert outcomes(records) == [PASSED]


def test_opted_out_after_is_the_rule_the_command_line_applies_too():
    assert opted_out_after(None, False, T0, "cli") is None
    assert opted_out_after(None, True, T0, "cli") == OptedOut(T0, "cli")
    assert opted_out_after(OptedOut(T0, "cli"), False, T0, "cli") is None


def test_the_state_keeps_the_opt_out_and_a_held_message_its_transactional_mark():
    window = {"window": "mon-fri 09:00-17:00", "timezone": "Europe/Copenhagen"}
    state, _ = step(OPTED, trigger(transactional=True, **window))
    assert state.held[0].transactional
    assert decode_state(encode_state(state)) == state
    plain = NumberState(last=LastSend(T0, "crm", "m-1"))
    assert decode_state(encode_state(plain)) == plain


# --- ingest's routing of sms.optouts ------------------------------------------------------------


def source(value, key=b"anything"):
    return Source(topics.OPTOUTS, 2, 11, T0, key, value)


def route_one(value, key=b"anything"):
    return route(source(value, key), Catalog(), Limits(5 * 60_000, 7 * 24 * HOUR))


def test_the_projects_own_record_reaches_the_number_as_an_opt_out_event():
    key, value = opt_out_record(E164, True, "cli", T0 - 5, "newsletter")
    assert key == E164.encode()
    (out,) = route_one(value, key)
    assert out.topic == topics.BY_NUMBER and out.key == E164.encode()
    event = out.record
    assert (event.kind, event.e164, event.at_ms, event.enabled, event.origin, event.ref) == (
        OPT_OUT_EVENT, E164, T0 - 5, True, "cli", "newsletter")


def test_an_outside_systems_json_record_with_its_own_key_is_normalized():
    value = json.dumps({"phone": "20 12 34 56", "country": "DK", "opted_out": False,
                        "at_ms": T0 + HOUR, "channel": "crm"}).encode()
    (out,) = route_one(value, b"customer-42")
    # Dated after it reached Kafka: taken at its Kafka time.
    assert (out.record.e164, out.record.enabled, out.record.at_ms) == (E164, False, T0)


def test_a_tombstone_routes_nothing_and_a_bad_record_is_dead_lettered():
    assert route_one(None) == []
    (bad,) = route_one(b"{not json")
    assert bad.topic == topics.DEADLETTER and bad.record.reason == "undecodable"
    value = codecs.OPT_OUT.encode({"phone": "123", "country": "DK", "opted_out": True,
                                   "at_ms": T0, "channel": "crm", "scope": None})
    (bad,) = route_one(value)
    assert bad.topic == topics.DEADLETTER and bad.record.reason == INVALID_NUMBER


@pytest.mark.parametrize("field", ["channel", "scope"])
def test_an_overlong_channel_or_scope_is_dead_lettered(field):
    record = {"phone": E164, "country": None, "opted_out": True, "at_ms": T0,
              "channel": "crm", "scope": None, field: "x" * 201}
    (bad,) = route_one(codecs.OPT_OUT.encode(record))
    assert bad.topic == topics.DEADLETTER and field in bad.record.detail


# --- sends refused for good in a row --------------------------------------------------------


def failed(decision_id, at_ms=T0, keep=3):
    return NumberEvent(FAILED_EVENT, E164, at_ms, "sms.delivery", 0, 5,
                       decision_id=decision_id, automation_id="welcome",
                       failures_to_opt_out=keep)


def ours_sent(decision_id, at_ms=T0):
    return NumberEvent("sent", E164, at_ms, "sms.sent", 0, 9, decision_id=decision_id,
                       origin="welcome", ref=decision_id)


def test_the_third_send_refused_in_a_row_opts_the_number_out_and_says_so():
    state, records = step(None, failed("d1"))
    state, records = step(state, failed("d2", T0 + 1))
    assert records == [] and state.opted_out is None
    state, records = step(state, failed("d3", T0 + 2))
    assert state.opted_out == OptedOut(T0 + 2, "auto_failed_deliveries")
    assert records == [OptOut(phone=E164, opted_out=True, at_ms=T0 + 2,
                              channel="auto_failed_deliveries")]
    _, records = step(state, trigger(at_ms=T0 + 3))
    assert outcomes(records) == [OPTED_OUT]


def test_an_accepted_send_of_ours_breaks_the_row_and_a_replayed_failure_counts_once():
    state, _ = step(None, failed("d1"))
    state, _ = step(state, failed("d1"))  # the same delivery record read again
    state, _ = step(state, failed("d2"))
    assert state.failed_in_a_row == ("d1", "d2")
    state, _ = step(state, NumberEvent("sent", E164, T0, "sms.sent", 0, 9, origin="crm",
                                       ref="m-1"))  # another system's send proves nothing
    assert state.failed_in_a_row == ("d1", "d2")
    state, _ = step(state, ours_sent("d9"))
    assert state.failed_in_a_row == ()
    state, _ = step(state, failed("d3"))
    assert state.opted_out is None and state.failed_in_a_row == ("d3",)


def test_without_a_limit_failures_are_not_counted():
    state, records = step(None, failed("d1", keep=0))
    assert (state, records) == (None, [])


def test_the_state_keeps_the_failures_in_a_row():
    state, _ = step(OPTED, trigger(transactional=True))
    state, _ = step(replace(state, opted_out=None), failed("d1"))
    assert state.failed_in_a_row == ("d1",)
    assert decode_state(encode_state(state)) == state


def delivery(outcome, ambiguous=False):
    return Source(topics.DELIVERY, 0, 5, T0, None, codecs.DELIVERY_OUTCOME.encode({
        "decision_id": "d" * 32, "event_id": "evt-1", "automation_id": "welcome",
        "e164": E164, "outcome": outcome, "ambiguous": ambiguous, "attempts": 1,
        "gateway": "gatewayapi", "message_id": None, "status": 400, "detail": "",
        "at_ms": T0}))


@pytest.mark.parametrize(("outcome", "ambiguous", "limit", "kinds"), [
    ("failed", False, 3, ["release", "failed"]),
    ("failed", False, 0, ["release"]),
    ("given_up", False, 3, ["release"]),  # not refused: no answer
    ("failed", True, 3, []),  # may have reached the phone
    ("accepted", False, 3, []),
])
def test_a_refused_send_counts_towards_the_opt_out_only_when_refused_for_good(
        outcome, ambiguous, limit, kinds):
    outs = route(delivery(outcome, ambiguous), Catalog(),
                 Limits(5 * 60_000, 7 * 24 * HOUR, limit))
    assert [o.record.kind for o in outs] == kinds
    assert all(o.record.failures_to_opt_out == limit for o in outs if o.record.kind == "failed")


def test_an_erasure_request_reaches_the_number_and_a_hashed_opt_out_routes_nothing():
    from streams.erasure import erasure_record, hashed_opt_out_record

    _, value = erasure_record(E164, T0 - 5, "cli")
    (out,) = route(Source(topics.ERASURES, 0, 1, T0, None, value), Catalog(),
                   Limits(5 * 60_000, 7 * 24 * HOUR))
    assert (out.topic, out.record.kind, out.record.e164, out.record.at_ms,
            out.record.origin) == (topics.BY_NUMBER, "erase", E164, T0 - 5, "cli")
    key, value = hashed_opt_out_record(b"secret", E164, OptedOut(T0, "cli"))
    assert key.startswith(b"hmac-sha256:") and E164[1:].encode() not in key + value
    assert route_one(value, key) == []
