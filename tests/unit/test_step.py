"""`step`: one number event applied to one number's state, with the records it gives."""

from dataclasses import replace

import pytest

from streams.outcomes import AUTOMATION_DISABLED, OUTSIDE_WINDOW, PASSED, SUPPRESSED_COOLDOWN
from streams.records import DecisionRecord, NumberEvent, SendRequest
from streams.rule import LastSend, NumberState, decision_id_for
from streams.step import InvalidEvent, step

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
HOUR = 3_600_000
E164 = "+4520123456"


def trigger(event_id="evt-1", at_ms=T0, **changes):
    event = NumberEvent(
        "trigger", E164, at_ms, "sms.triggers", 1, 7, event_id=event_id,
        decision_id=decision_id_for(event_id, "welcome"), automation_id="welcome",
        cooldown_enabled=True, cooldown_ms=24 * HOUR, text="Hi Bo", sender="ACME")
    return replace(event, **changes)


def test_a_pass_gives_its_decision_and_its_send_request_and_reserves():
    event = trigger()
    state, records = step(None, event)
    assert state == NumberState(LastSend(T0, "welcome", event.decision_id),
                                (event.decision_id,))
    assert records == [
        DecisionRecord(event.decision_id, "evt-1", "welcome", E164, PASSED,
                       "passed the cooldown; the number is reserved", T0,
                       "sms.triggers", 1, 7),
        SendRequest(event.decision_id, "evt-1", "welcome", E164, "Hi Bo", "ACME", T0),
    ]


def test_a_suppression_names_its_cause_and_keeps_the_state():
    before = NumberState(LastSend(T0 - HOUR, "crm", "m-1"))
    state, (record,) = step(before, trigger())
    assert state == before
    assert (record.outcome, record.cause_at_ms, record.cause_origin, record.cause_ref) == (
        SUPPRESSED_COOLDOWN, T0 - HOUR, "crm", "m-1")
    assert record.detail == f"the number got an SMS from crm at {T0 - HOUR} (ref m-1)"


@pytest.mark.parametrize(("changes", "outcome", "detail"), [
    ({"enabled": False}, AUTOMATION_DISABLED, "the automation is disabled"),
    # 00:00 UTC on a Thursday is outside 09:00-17:00 Copenhagen time.
    ({"window": "mon-fri 09:00-17:00", "timezone": "Europe/Copenhagen",
      "hold_outside_window": False}, OUTSIDE_WINDOW,
     "outside the automation's sending window"),
])
def test_decisions_that_send_nothing(changes, outcome, detail):
    state, (record,) = step(None, trigger(**changes))
    assert (state, record.outcome, record.detail) == (None, outcome, detail)


def test_a_send_and_a_release_give_no_records():
    sent = NumberEvent("sent", E164, T0, "sms.sent", 0, 1, origin="crm", ref="m-1")
    state, records = step(None, sent)
    assert (state, records) == (NumberState(LastSend(T0, "crm", "m-1")), [])
    passed, _ = step(state, trigger(at_ms=T0 + 25 * HOUR))
    release = NumberEvent("release", E164, T0, "sms.delivery", 0, 1,
                          decision_id=trigger().decision_id)
    released, records = step(passed, release)
    assert records == []
    assert released.last == LastSend(T0, "crm", "m-1")


@pytest.mark.parametrize("changes", [
    {"decision_id": None}, {"text": None}, {"window": "sometimes"},
    {"cooldown_ms": 0}, {"timezone": "Mars/Olympus", "window": "daily 09:00-20:00"},
])
def test_an_event_that_makes_no_sense_is_refused(changes):
    with pytest.raises(InvalidEvent):
        step(None, trigger(**changes))


def test_a_release_without_decision_id_is_refused():
    with pytest.raises(InvalidEvent):
        step(None, NumberEvent("release", E164, T0, "sms.delivery", 0, 1))
