"""Held messages: when a trigger that may not go out now is released, and what happens
then — windows in the recipient's zone (DST both ways, across midnight, week-ends),
deferred cooldowns, deadlines at the edge, collapses, cancels and replays."""

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from streams import codecs, topics
from streams.automations import Automation, Catalog
from streams.normalize import Limits, Source, route
from streams.outcomes import (
    CANCELLED,
    COLLAPSED,
    DEFERRED_COOLDOWN,
    EXPIRED,
    HELD_WINDOW,
    OUTSIDE_WINDOW,
    PASSED,
    RELEASED,
    SUPPRESSED_COOLDOWN,
)
from streams.records import DecisionRecord, NumberEvent, SendRequest
from streams.rule import LastSend, NumberState, decision_id_for
from streams.state import decode_state, encode_state
from streams.step import step

HOUR = 3_600_000
MINUTE = 60_000
E164 = "+4520123456"
CPH = "Europe/Copenhagen"


def at(text: str, tz: str = CPH) -> int:
    """Epoch ms of a local wall-clock time, e.g. at('2026-03-28 22:00')."""
    local = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(tz))
    return int(local.timestamp() * 1000)


def trigger(event_id="evt-1", at_ms=0, automation_id="welcome", **changes):
    event = NumberEvent(
        "trigger", E164, at_ms, "sms.triggers", 1, 7, event_id=event_id,
        decision_id=decision_id_for(event_id, automation_id), automation_id=automation_id,
        text=f"Hi from {automation_id}", sender="ACME", window="daily 08:00-21:00",
        timezone=CPH, hold_outside_window=True, max_hold_ms=7 * 24 * HOUR)
    return replace(event, **changes)


def due(now_ms):
    return NumberEvent("due", E164, now_ms, "", -1, -1)


def sent(at_ms, ref="m-1"):
    return NumberEvent("sent", E164, at_ms, "sms.sent", 0, 1, origin="crm", ref=ref)


def cancel(automation_id, at_ms, outcome=CANCELLED):
    return NumberEvent("cancel", E164, at_ms, "smscool", -1, -1,
                       automation_id=automation_id, origin=outcome)


def decisions(records):
    return [(r.outcome, r.release_at_ms) for r in records if isinstance(r, DecisionRecord)]


def sends(records):
    return [r for r in records if isinstance(r, SendRequest)]


# --- when a window hold is released -------------------------------------------------------


@pytest.mark.parametrize(("name", "window", "trigger_at", "release_at"), [
    ("late evening", "daily 08:00-21:00", "2026-01-14 23:10", "2026-01-15 08:00"),
    ("early morning", "daily 08:00-21:00", "2026-01-15 06:00", "2026-01-15 08:00"),
    ("spring forward: the night loses an hour", "daily 08:00-21:00",
     "2026-03-28 22:00", "2026-03-29 08:00"),
    ("autumn back: the night gains an hour", "daily 08:00-21:00",
     "2026-10-24 22:00", "2026-10-25 08:00"),
    ("across midnight, before it opens", "daily 22:00-02:00",
     "2026-01-15 03:00", "2026-01-15 22:00"),
    ("week-end", "mon-fri 09:00-17:00", "2026-01-16 18:00", "2026-01-19 09:00"),
    ("week-end across midnight", "fri 22:00-02:00", "2026-01-17 02:00", "2026-01-23 22:00"),
])
def test_a_trigger_outside_its_window_is_held_until_it_next_opens(
        name, window, trigger_at, release_at):
    event = trigger(at_ms=at(trigger_at), window=window)
    state, records = step(None, event)
    assert decisions(records) == [(HELD_WINDOW, at(release_at))], name
    (held,) = state.held
    assert (held.decision_id, held.release_at_ms, held.reason) == (
        event.decision_id, at(release_at), HELD_WINDOW)
    assert state.last is None  # nothing is reserved while it waits


def test_an_opening_inside_the_spring_gap_releases_when_the_clock_jumps_past_it():
    # 02:30 does not exist on 2026-03-29 in Copenhagen: the window opens at 03:00 CEST.
    event = trigger(at_ms=at("2026-03-29 01:00"), window="daily 02:30-05:00")
    _, records = step(None, event)
    assert decisions(records) == [(HELD_WINDOW, at("2026-03-29 03:00"))]
    assert at("2026-03-29 03:00") - at("2026-03-29 01:00") == HOUR  # one hour later


def test_inside_a_window_across_midnight_passes():
    _, records = step(None, trigger(at_ms=at("2026-01-15 23:30"), window="daily 22:00-02:00"))
    assert decisions(records) == [(PASSED, None)]


def test_the_window_counts_in_the_recipients_zone():
    # A UK number for an automation set up in Copenhagen: 08:00 in London is 09:00 there.
    catalog = Catalog([Automation("welcome", "Welcome", "DK", "Hi", "ACME",
                                  window="daily 08:00-21:00", timezone=CPH)])
    value = codecs.TRIGGER.encode({
        "event_id": "evt-1", "automation_id": "welcome", "event_type": None, "segment": None,
        "phone": "+44 20 7123 4567", "occurred_at_ms": at("2026-01-15 07:30", "UTC"),
        "attributes": {}})
    now = at("2026-01-15 07:30", "UTC")  # 08:30 in Copenhagen: its window is open there
    (out,) = route(Source(topics.TRIGGERS, 0, 1, now, None, value), catalog,
                   Limits(5 * MINUTE, 7 * 24 * HOUR))
    assert out.record.timezone == "Europe/London"
    _, records = step(None, out.record)
    assert decisions(records) == [(HELD_WINDOW, at("2026-01-15 08:00", "Europe/London"))]


def test_drop_outside_the_window_keeps_the_old_outcome():
    state, records = step(None, trigger(at_ms=at("2026-01-14 23:10"),
                                        hold_outside_window=False))
    assert (state, decisions(records)) == (None, [(OUTSIDE_WINDOW, None)])


# --- deadlines ----------------------------------------------------------------------------


def test_a_release_exactly_at_the_deadline_is_held_and_a_millisecond_later_expires():
    trigger_at, opening = at("2026-01-14 23:10"), at("2026-01-15 08:00")
    state, records = step(None, trigger(at_ms=trigger_at, max_hold_ms=opening - trigger_at))
    assert decisions(records) == [(HELD_WINDOW, opening)]
    released, records = step(state, due(opening))
    assert decisions(records) == [(RELEASED, None)]
    assert [s.decided_at_ms for s in sends(records)] == [opening]

    late = trigger(at_ms=trigger_at, max_hold_ms=opening - trigger_at - 1)
    state, records = step(None, late)
    assert decisions(records) == [(EXPIRED, opening)]
    # Remembered as expired at once: a replay, whatever came meanwhile, gives the same
    # decision again (the first may have been lost with a killed worker).
    assert state == NumberState(expired=(late.decision_id,))
    _, replayed = step(replace(state, last=LastSend(opening, "crm", "m-1")), late)
    assert decisions(replayed) == [(EXPIRED, None)]
    assert replayed[0].decision_id == late.decision_id


# --- deferred cooldown --------------------------------------------------------------------

T = at("2026-01-15 10:00")
DEFERRING = {"window": "always", "timezone": "UTC", "cooldown_enabled": True,
             "cooldown_ms": 2 * HOUR, "defer_on_cooldown": True, "max_hold_ms": 6 * HOUR}


def test_a_trigger_inside_the_cooldown_is_deferred_to_its_end_and_released_then():
    state, _ = step(None, sent(T))
    state, records = step(state, trigger(at_ms=T + 30 * MINUTE, **DEFERRING))
    assert decisions(records) == [(DEFERRED_COOLDOWN, T + 2 * HOUR)]
    assert records[0].cause_at_ms == T
    assert step(state, due(T + 2 * HOUR - 1)) == (state, [])  # not due yet
    state, records = step(state, due(T + 2 * HOUR + 300))
    assert decisions(records) == [(RELEASED, None)]
    (send,) = sends(records)
    # Decided at its release time, not when the timer came round.
    assert send.decided_at_ms == T + 2 * HOUR
    assert state.last == LastSend(T + 2 * HOUR, "welcome", send.decision_id)
    assert state.held == ()


def test_a_deferral_whose_cooldown_ends_outside_the_window_waits_for_the_opening():
    state, _ = step(None, sent(at("2026-01-15 20:00")))
    _, records = step(state, trigger(at_ms=at("2026-01-15 20:30"),
                                     **{**DEFERRING, "window": "daily 08:00-21:00",
                                        "timezone": CPH, "max_hold_ms": 24 * HOUR}))
    assert decisions(records) == [(DEFERRED_COOLDOWN, at("2026-01-16 08:00"))]


def test_an_sms_that_came_meanwhile_defers_it_again_or_expires_it():
    terms = {**DEFERRING, "max_hold_ms": 4 * HOUR}  # deadline: T + 270 min
    state, _ = step(None, sent(T))
    state, _ = step(state, trigger(at_ms=T + 30 * MINUTE, **terms))
    state, _ = step(state, sent(T + 90 * MINUTE, ref="m-2"))
    again, records = step(state, due(T + 2 * HOUR))
    assert decisions(records) == [(DEFERRED_COOLDOWN, T + 210 * MINUTE)]
    assert sends(records) == []
    # Once more, and now the cooldown ends past the deadline.
    again, _ = step(again, sent(T + 200 * MINUTE, ref="m-3"))
    ended, records = step(again, due(T + 210 * MINUTE))
    assert decisions(records) == [(EXPIRED, T + 320 * MINUTE)]
    assert ended.held == () and sends(records) == []


def test_cooldown_past_the_deadline_expires_at_once():
    state, _ = step(None, sent(T))
    state, records = step(state, trigger(at_ms=T + 30 * MINUTE,
                                         **{**DEFERRING, "max_hold_ms": HOUR}))
    assert decisions(records) == [(EXPIRED, T + 2 * HOUR)]
    assert state.held == ()


def test_drop_on_cooldown_keeps_the_old_outcome():
    state, _ = step(None, sent(T))
    _, records = step(state, trigger(at_ms=T + MINUTE,
                                     **{**DEFERRING, "defer_on_cooldown": False}))
    assert decisions(records) == [(SUPPRESSED_COOLDOWN, None)]


def test_a_window_hold_meeting_a_cooldown_at_the_opening_is_suppressed_when_it_drops():
    state, _ = step(None, trigger("evt-1", at("2026-01-14 23:00"), cooldown_enabled=True,
                                  cooldown_ms=24 * HOUR))
    state, _ = step(state, sent(at("2026-01-15 07:59")))
    _, records = step(state, due(at("2026-01-15 08:00")))
    assert decisions(records) == [(SUPPRESSED_COOLDOWN, None)]


# --- one message per number per release ---------------------------------------------------


def test_three_messages_deferred_behind_one_sms_give_one_send_by_priority():
    state, _ = step(None, sent(T))
    for number, (automation, priority) in enumerate([("a", 0), ("b", 5), ("c", 1)]):
        state, _ = step(state, trigger(f"evt-{number}", T + (number + 1) * MINUTE, automation,
                                       priority=priority, **DEFERRING))
    assert len(state.held) == 3
    state, records = step(state, due(T + 2 * HOUR))
    (send,) = sends(records)
    assert send.automation_id == "b"
    by_automation = {}
    for record in records:
        if isinstance(record, DecisionRecord):
            by_automation.setdefault(record.automation_id, []).append(record.outcome)
    assert by_automation == {"b": [RELEASED], "c": [COLLAPSED, DEFERRED_COOLDOWN],
                             "a": [COLLAPSED, DEFERRED_COOLDOWN]}
    # Deferred behind the SMS that just went out.
    assert {h.automation_id: h.release_at_ms for h in state.held} == {
        "a": T + 4 * HOUR, "c": T + 4 * HOUR}


def test_of_equal_priority_the_newest_trigger_goes_out_and_without_cooldown_the_rest_end():
    state = None
    for number, automation in enumerate(["a", "b", "c"]):
        state, _ = step(state, trigger(f"evt-{number}", at("2026-01-14 22:00") + number,
                                       automation))
    state, records = step(state, due(at("2026-01-15 08:00")))
    assert [s.automation_id for s in sends(records)] == ["c"]
    assert sorted(decisions(records)) == [(COLLAPSED, None)] * 2 + [(RELEASED, None)]
    assert state.held == ()


# --- replays, cancels, the stored form ----------------------------------------------------


def test_a_replayed_trigger_is_not_held_twice_nor_sent_again_after_its_release():
    event = trigger(at_ms=at("2026-01-14 23:10"))
    held, records = step(None, event)
    assert step(held, event) == (held, records)  # the same decision again, nothing new
    released, _ = step(held, due(at("2026-01-15 08:00")))
    assert step(released, event) == (released, [])


def test_a_cancel_ends_the_automations_held_messages_triggered_before_it():
    state, _ = step(None, trigger("evt-1", at("2026-01-14 22:00"), "a"))
    state, _ = step(state, trigger("evt-2", at("2026-01-14 22:00"), "b"))
    state, _ = step(state, trigger("evt-3", at("2026-01-14 23:00"), "a"))
    state, records = step(state, cancel("a", at("2026-01-14 22:30")))
    assert decisions(records) == [(CANCELLED, None)]
    assert [h.event_id for h in state.held] == ["evt-2", "evt-3"]
    assert decision_id_for("evt-1", "a") in state.finished


def test_held_messages_survive_the_stored_form():
    state, _ = step(None, sent(T))
    state, _ = step(state, trigger("evt-1", T + MINUTE, **DEFERRING,
                                   text="Hej Søren — " + "x" * 1500))
    state, _ = step(state, trigger("evt-2", at("2026-01-14 23:10"), "b", priority=-3))
    assert len(state.held) == 2
    assert decode_state(encode_state(state)) == state
    released, _ = step(state, due(T + 2 * HOUR))
    assert released.finished and decode_state(encode_state(released)) == released


def test_nothing_due_changes_nothing():
    assert step(None, due(T)) == (None, [])
    state = NumberState(LastSend(T, "crm", "m-1"))
    assert step(state, due(T)) == (state, [])


def test_what_came_due_before_an_event_is_released_before_it():
    # The timer has not come round yet when a trigger of 08:00:00.500 arrives: the held
    # message goes out at the opening, and the new trigger meets its cooldown.
    state, _ = step(None, trigger("evt-1", at("2026-01-14 23:10"), "a", cooldown_enabled=True,
                                  cooldown_ms=HOUR))
    state, records = step(state, trigger("evt-2", at("2026-01-15 08:00") + 500, "b",
                                         cooldown_enabled=True, cooldown_ms=HOUR))
    assert [(r.automation_id, r.outcome) for r in records if isinstance(r, DecisionRecord)] == [
        ("a", RELEASED), ("b", SUPPRESSED_COOLDOWN)]
    assert [s.automation_id for s in sends(records)] == ["a"]


def test_the_recipients_zone_by_calling_code_agrees_with_the_number_parsed():
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    from streams.window import _number_zone, recipient_zone

    checked = 0
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
            assert recipient_zone(e164, CPH) == _number_zone(e164, CPH), (region, kind)
            checked += 1
    assert checked > 400


def test_messages_due_at_different_times_go_out_each_at_its_own():
    # Held until 08:00 and deferred until 10:00; the timer comes round only at 11:00 (a
    # worker that was down): the first goes out at 08:00, the second meets its cooldown.
    state, _ = step(None, sent(at("2026-01-15 08:00") - 2 * HOUR))
    state, _ = step(state, trigger("evt-1", at("2026-01-14 23:10"), "a"))
    state, _ = step(state, trigger("evt-2", at("2026-01-15 07:00"), "b",
                                   **{**DEFERRING, "cooldown_ms": 4 * HOUR}))
    assert sorted(h.release_at_ms for h in state.held) == [
        at("2026-01-15 08:00"), at("2026-01-15 10:00")]
    state, records = step(state, due(at("2026-01-15 11:00")))
    assert [(r.automation_id, r.outcome, r.decided_at_ms) for r in records
            if isinstance(r, DecisionRecord)] == [
        ("a", RELEASED, at("2026-01-15 08:00")),
        ("b", DEFERRED_COOLDOWN, at("2026-01-15 10:00"))]
    assert state.held[0].release_at_ms == at("2026-01-15 12:00")


def test_a_number_remembers_its_last_expiries_at_once_through_its_encoding():
    from streams.rule import RECENT_FINISHED, expire_at_once

    state = None
    for n in range(RECENT_FINISHED + 5):
        state = expire_at_once(state, decision_id_for(f"evt-{n}", "a"))
    assert len(state.expired) == RECENT_FINISHED
    assert decision_id_for("evt-4", "a") not in state.expired
    assert decision_id_for("evt-5", "a") in state.expired
    assert decode_state(encode_state(state)) == state
