import hashlib
import random
from dataclasses import replace

import pytest

from streams.outcomes import RULE_OUTCOMES
from streams.rule import (
    AUTOMATION_DISABLED,
    OUTSIDE_WINDOW,
    PASSED,
    RECENT_PASSES,
    SUPPRESSED_COOLDOWN,
    AutomationTerms,
    Decision,
    LastSend,
    NumberState,
    decide,
    decision_id_for,
    record_send,
    release,
)
from streams.window import parse_window

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday
INTERVAL = 24 * HOUR

A = AutomationTerms(
    "welcome", enabled=True, cooldown_enabled=True, cooldown_ms=INTERVAL, window=None
)
B = AutomationTerms(
    "reminder", enabled=True, cooldown_enabled=True, cooldown_ms=INTERVAL, window=None
)
FREE = AutomationTerms("otp", enabled=True, cooldown_enabled=False, cooldown_ms=0, window=None)


def passed_state(at_ms: int, origin: str = "welcome", ref: str = "d0") -> NumberState:
    return NumberState(LastSend(at_ms, origin, ref), (ref,))


# --- decision ids ----------------------------------------------------------------------------


def test_decision_id_is_deterministic():
    expected = hashlib.sha256(b"evt-1\x1fwelcome").hexdigest()[:32]
    assert decision_id_for("evt-1", "welcome") == expected
    assert decision_id_for("evt-1", "welcome") == decision_id_for("evt-1", "welcome")
    assert len(expected) == 32
    int(expected, 16)


@pytest.mark.parametrize(
    ("event_id", "automation_id"),
    [("evt-1", "reminder"), ("evt-2", "welcome"), ("evt-1welcome", ""), ("evt-", "1welcome")],
)
def test_decision_id_differs_for_other_inputs(event_id, automation_id):
    assert decision_id_for(event_id, automation_id) != decision_id_for("evt-1", "welcome")


def test_decision_id_of_non_ascii_ids():
    expected = hashlib.sha256("hændelse\x1fvelkommen".encode()).hexdigest()[:32]
    assert decision_id_for("hændelse", "velkommen") == expected


# --- the cooldown edge -----------------------------------------------------------------------


def test_first_sms_to_a_number_passes_and_reserves():
    decision, state = decide("d1", A, None, T0)
    assert decision == Decision("d1", PASSED, T0)
    assert state == NumberState(LastSend(T0, "welcome", "d1"), ("d1",))


def test_empty_state_behaves_like_no_state():
    assert decide("d1", A, NumberState(), T0) == decide("d1", A, None, T0)


@pytest.mark.parametrize(
    ("now", "outcome"),
    [
        (T0 + 1, SUPPRESSED_COOLDOWN),
        (T0 + INTERVAL - 1, SUPPRESSED_COOLDOWN),
        (T0 + INTERVAL, PASSED),
        (T0 + INTERVAL + 1, PASSED),
        (T0 + 10 * INTERVAL, PASSED),
    ],
)
def test_cooldown_edge(now, outcome):
    state = passed_state(T0)
    decision, new_state = decide("d1", A, state, now)
    assert decision.outcome == outcome
    assert decision.decided_at_ms == now
    if outcome == PASSED:
        assert decision.cause is None
        assert new_state == NumberState(LastSend(now, "welcome", "d1"), ("d0", "d1"), state.last)
    else:
        assert decision.cause == state.last
        assert new_state is state


def test_same_instant_as_last_send_is_suppressed():
    decision, _ = decide("d1", A, passed_state(T0), T0)
    assert decision.outcome == SUPPRESSED_COOLDOWN


@pytest.mark.parametrize("ahead", [1, HOUR, 10 * INTERVAL])
def test_last_send_dated_after_now_suppresses(ahead):
    state = passed_state(T0 + ahead)
    decision, new_state = decide("d1", A, state, T0)
    assert decision == Decision("d1", SUPPRESSED_COOLDOWN, T0, cause=state.last)
    assert new_state is state


def test_cooldown_measured_with_the_deciding_automations_interval():
    short = replace(B, cooldown_ms=HOUR)
    state = passed_state(T0)
    assert decide("d1", short, state, T0 + HOUR)[0].outcome == PASSED
    assert decide("d1", short, state, T0 + HOUR - 1)[0].outcome == SUPPRESSED_COOLDOWN
    assert decide("d1", A, state, T0 + HOUR)[0].outcome == SUPPRESSED_COOLDOWN


# --- across automations and origins ----------------------------------------------------------


def test_pass_of_one_automation_suppresses_another():
    decision_a, state = decide("da", A, None, T0)
    assert decision_a.outcome == PASSED
    decision_b, state_after_b = decide("db", B, state, T0 + HOUR)
    assert decision_b == Decision(
        "db", SUPPRESSED_COOLDOWN, T0 + HOUR, cause=LastSend(T0, "welcome", "da")
    )
    assert state_after_b is state


def test_external_send_suppresses():
    state = record_send(None, LastSend(T0, "crm", "msg-17"))
    decision, new_state = decide("d1", A, state, T0 + INTERVAL - 1)
    assert decision.outcome == SUPPRESSED_COOLDOWN
    assert decision.cause == LastSend(T0, "crm", "msg-17")
    assert new_state is state
    assert decide("d1", A, state, T0 + INTERVAL)[0].outcome == PASSED


def test_external_send_after_a_pass_moves_the_cooldown():
    _, state = decide("d1", A, None, T0)
    state = record_send(state, LastSend(T0 + 5 * HOUR, "campaign", ""))
    decision, _ = decide("d2", B, state, T0 + INTERVAL)
    assert decision.outcome == SUPPRESSED_COOLDOWN
    assert decision.cause == LastSend(T0 + 5 * HOUR, "campaign", "")


def test_cooldown_off_always_passes_yet_reserves():
    state = passed_state(T0)
    decision, state = decide("f1", FREE, state, T0 + 1)
    assert decision.outcome == PASSED
    # reserved, but not remembered as a pass: its replay passes anyway
    assert state == NumberState(
        LastSend(T0 + 1, "otp", "f1"), ("d0",), LastSend(T0, "welcome", "d0"))
    # and its SMS counts for automations that do have a cooldown
    decision_a, _ = decide("a1", A, state, T0 + INTERVAL)
    assert decision_a.outcome == SUPPRESSED_COOLDOWN
    assert decision_a.cause == LastSend(T0 + 1, "otp", "f1")
    assert decide("a1", A, state, T0 + 1 + INTERVAL)[0].outcome == PASSED


def test_cooldown_off_passes_with_a_future_last_send_and_keeps_it():
    state = passed_state(T0 + HOUR, origin="crm", ref="m1")
    decision, new_state = decide("f1", FREE, state, T0)
    assert decision.outcome == PASSED
    assert new_state == NumberState(LastSend(T0 + HOUR, "crm", "m1"), ("m1",))


def test_reservation_at_the_same_instant_replaces_last():
    state = passed_state(T0, origin="crm", ref="m1")
    _, new_state = decide("f1", FREE, state, T0)
    assert new_state.last == LastSend(T0, "otp", "f1")


# --- disabled and window ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [None, NumberState(), passed_state(T0 - 10 * INTERVAL)])
def test_disabled_automation(state):
    terms = replace(A, enabled=False)
    decision, new_state = decide("d1", terms, state, T0)
    assert decision == Decision("d1", AUTOMATION_DISABLED, T0)
    assert new_state is state


def test_disabled_wins_over_window_and_cooldown():
    terms = replace(A, enabled=False, window=parse_window("sat 09:00-10:00", "UTC"))
    assert decide("d1", terms, passed_state(T0), T0 + 1)[0].outcome == AUTOMATION_DISABLED


OFFICE_UTC = parse_window("mon-fri 09:00-20:00", "UTC")
MONDAY = T0 + 4 * DAY  # 2026-01-05T00:00Z


@pytest.mark.parametrize(
    ("now", "outcome"),
    [
        (MONDAY + 9 * HOUR - 1, OUTSIDE_WINDOW),
        (MONDAY + 9 * HOUR, PASSED),
        (MONDAY + 20 * HOUR - 1, PASSED),
        (MONDAY + 20 * HOUR, OUTSIDE_WINDOW),
        (MONDAY - 12 * HOUR, OUTSIDE_WINDOW),  # Sunday noon
    ],
)
def test_window(now, outcome):
    terms = replace(A, window=OFFICE_UTC)
    decision, new_state = decide("d1", terms, None, now)
    assert decision.outcome == outcome
    assert (new_state is None) == (outcome == OUTSIDE_WINDOW)


def test_outside_window_wins_over_cooldown_and_reserves_nothing():
    terms = replace(A, window=OFFICE_UTC)
    state = passed_state(MONDAY)
    decision, new_state = decide("d1", terms, state, MONDAY + 21 * HOUR)
    assert decision == Decision("d1", OUTSIDE_WINDOW, MONDAY + 21 * HOUR)
    assert new_state is state


def test_window_applies_to_automations_without_cooldown():
    terms = replace(FREE, window=OFFICE_UTC)
    assert decide("f1", terms, None, MONDAY)[0].outcome == OUTSIDE_WINDOW


def test_window_uses_the_automation_time_zone():
    # 2026-01-05T12:00Z is 13:00 in Copenhagen, 07:00 in New York.
    now = MONDAY + 12 * HOUR
    copenhagen = replace(A, window=parse_window("mon-fri 09:00-20:00", "Europe/Copenhagen"))
    new_york = replace(A, window=parse_window("mon-fri 09:00-20:00", "America/New_York"))
    assert decide("d1", copenhagen, None, now)[0].outcome == PASSED
    assert decide("d1", new_york, None, now)[0].outcome == OUTSIDE_WINDOW


# --- replays ---------------------------------------------------------------------------------


def test_replay_passes_again_without_a_second_reservation():
    first, state = decide("d1", A, None, T0)
    again, state_again = decide("d1", A, state, T0)
    assert again == first
    assert state_again is state
    later, state_later = decide("d1", A, state, T0 + HOUR)  # replayed after a restart
    assert later.outcome == PASSED
    assert state_later is state


def test_replay_after_another_automation_without_cooldown_passed():
    first, state = decide("d1", A, None, T0)
    _, state = decide("f1", FREE, state, T0 + HOUR)
    assert state.last == LastSend(T0 + HOUR, "otp", "f1")
    again, state_again = decide("d1", A, state, T0)
    assert again == first
    assert state_again is state
    assert state.recent_passes == ("d1",)


def test_replay_after_an_external_send_still_passes():
    _, state = decide("d1", A, None, T0)
    state = record_send(state, LastSend(T0 + 1, "crm", "m1"))
    decision, new_state = decide("d1", A, state, T0 + 2)
    assert decision.outcome == PASSED
    assert new_state is state


def test_replay_wins_over_a_since_disabled_automation_and_a_closed_window():
    _, state = decide("d1", A, None, MONDAY + 10 * HOUR)
    terms = replace(A, enabled=False, window=OFFICE_UTC)
    decision, new_state = decide("d1", terms, state, MONDAY + 22 * HOUR)
    assert decision.outcome == PASSED
    assert new_state is state


def test_suppressed_decision_is_not_remembered_as_a_pass():
    _, state = decide("d1", A, None, T0)
    decision, state = decide("d2", B, state, T0 + 1)
    assert decision.outcome == SUPPRESSED_COOLDOWN
    assert "d2" not in state.recent_passes
    assert decide("d2", B, state, T0 + INTERVAL)[0].outcome == PASSED


def test_recent_passes_keep_the_latest_few():
    state = None
    ids = [f"d{i}" for i in range(RECENT_PASSES + 3)]
    for i, decision_id in enumerate(ids):
        _, state = decide(decision_id, A, state, T0 + i * INTERVAL)
    assert state.recent_passes == tuple(ids[-RECENT_PASSES:])
    assert len(state.recent_passes) == RECENT_PASSES
    # the oldest pass fell out of the list, so its replay would be a new decision
    later = T0 + 100 * INTERVAL
    replayed, new_state = decide(ids[0], A, state, later)
    assert replayed.outcome == PASSED
    assert new_state.last == LastSend(later, "welcome", ids[0])


def test_passes_without_cooldown_are_not_remembered():
    _, state = decide("d1", A, None, T0)
    for i in range(2 * RECENT_PASSES):
        _, state = decide(f"f{i}", FREE, state, T0 + i + 1)
    assert state.recent_passes == ("d1",)
    assert decide("d1", A, state, T0)[0].outcome == PASSED


# --- record_send -----------------------------------------------------------------------------


def test_record_send_on_an_unknown_number():
    send = LastSend(T0, "crm", "m1")
    assert record_send(None, send) == NumberState(send, ())


@pytest.mark.parametrize(
    ("existing_at", "send_at", "winner"),
    [
        (T0, T0 + 1, "new"),
        (T0, T0, "new"),  # ties go to the new send
        (T0 + 1, T0, "existing"),
    ],
)
def test_record_send_keeps_the_later_send(existing_at, send_at, winner):
    state = NumberState(LastSend(existing_at, "welcome", "d1"), ("d1",))
    send = LastSend(send_at, "crm", "m1")
    new_state = record_send(state, send)
    assert new_state.last == (send if winner == "new" else state.last)
    assert new_state.recent_passes == ("d1",)


def test_record_send_into_a_state_without_last():
    state = NumberState(None, ("d1",))
    send = LastSend(T0, "crm", "m1")
    assert record_send(state, send) == NumberState(send, ("d1",))


def test_record_send_is_idempotent():
    send = LastSend(T0, "crm", "m1")
    once = record_send(passed_state(T0 - HOUR), send)
    assert record_send(once, send) == once
    assert record_send(record_send(None, send), send) == record_send(None, send)


def test_connector_confirmation_of_our_own_pass():
    _, state = decide("d1", A, None, T0)
    confirmed = record_send(state, LastSend(T0 + 2_000, "welcome", "d1"))
    assert confirmed == NumberState(LastSend(T0 + 2_000, "welcome", "d1"), ("d1",))
    assert decide("d1", A, confirmed, T0 + 3_000)[1] is confirmed


# --- the terms and the decision --------------------------------------------------------------


def test_cooldown_needs_a_positive_interval():
    with pytest.raises(ValueError, match="greater than zero"):
        AutomationTerms("a", enabled=True, cooldown_enabled=True, cooldown_ms=0, window=None)
    AutomationTerms("a", enabled=True, cooldown_enabled=False, cooldown_ms=0, window=None)


def test_decision_outcomes():
    assert set(RULE_OUTCOMES) == {
        PASSED, SUPPRESSED_COOLDOWN, OUTSIDE_WINDOW, AUTOMATION_DISABLED, "opted_out",
        "held_window", "deferred_cooldown", "released", "expired", "collapsed", "cancelled"}
    with pytest.raises(ValueError, match="unknown outcome"):
        Decision("d1", "maybe", T0)


# --- properties over random histories (seeded, no hypothesis) --------------------------------


def test_random_histories_keep_the_invariants():
    rng = random.Random(20260329)
    automations = [
        A,
        B,
        FREE,
        replace(B, automation_id="short", cooldown_ms=HOUR),
        replace(A, automation_id="off", enabled=False),
    ]
    for _ in range(300):
        state = None
        now = T0
        passed: dict[str, tuple[Decision, NumberState]] = {}
        for step in range(40):
            now += rng.choice([0, 1, HOUR - 1, HOUR, 5 * HOUR, INTERVAL - 1, INTERVAL])
            if rng.random() < 0.2:
                send = LastSend(now + rng.choice([-HOUR, 0, HOUR]), "crm", f"m{step}")
                new_state = record_send(state, send)
                assert record_send(new_state, send) == new_state
                assert new_state.last.at_ms >= send.at_ms
                if state is not None and state.last is not None:
                    assert new_state.last.at_ms >= state.last.at_ms
                state = new_state
                continue
            terms = rng.choice(automations)
            if passed and rng.random() < 0.2:
                decision_id = rng.choice(list(passed))
            else:
                decision_id = f"d{step}"
            decision, new_state = decide(decision_id, terms, state, now)
            assert decision.decision_id == decision_id
            assert decision.decided_at_ms == now
            assert decision.outcome in RULE_OUTCOMES
            assert decide(decision_id, terms, state, now) == (decision, new_state)
            if decision_id in passed:
                assert decision.outcome == PASSED
                assert new_state is state
                continue
            if decision.outcome != PASSED:
                assert new_state is state
                assert (decision.cause is not None) == (decision.outcome == SUPPRESSED_COOLDOWN)
                if decision.cause is not None:
                    assert now - decision.cause.at_ms < terms.cooldown_ms
                continue
            last = state.last if state is not None else None
            if terms.cooldown_enabled and last is not None:
                assert now - last.at_ms >= terms.cooldown_ms
            assert new_state.last.at_ms == max(now, last.at_ms if last else now)
            assert len(new_state.recent_passes) <= RECENT_PASSES
            if not terms.cooldown_enabled:
                assert new_state.recent_passes == (state.recent_passes if state else ())
                state = new_state
                continue
            assert new_state.recent_passes[-1] == decision_id
            passed[decision_id] = (decision, new_state)
            state = new_state
            # a pass is remembered only while it is among the latest few
            passed = {d: v for d, v in passed.items() if d in state.recent_passes}


# --- release -------------------------------------------------------------------------------


def test_release_restores_what_the_reservation_replaced():
    state = record_send(None, LastSend(T0, "crm", "m1"))
    _, reserved = decide("d1", A, state, T0 + INTERVAL)
    assert reserved.previous == LastSend(T0, "crm", "m1")
    released = release(reserved, "d1")
    assert released.last == LastSend(T0, "crm", "m1")
    # a trigger right after the release is judged against the earlier SMS again
    assert decide("d2", A, released, T0 + INTERVAL + 1)[0].outcome == PASSED
    assert decide("d2", A, released, T0 + INTERVAL - 1)[0].outcome == SUPPRESSED_COOLDOWN


def test_release_of_a_first_reservation_leaves_no_last_send():
    _, reserved = decide("d1", A, None, T0)
    released = release(reserved, "d1")
    assert released.last is None
    assert decide("d2", A, released, T0 + 1)[0].outcome == PASSED


def test_release_after_the_send_was_confirmed_still_releases():
    _, reserved = decide("d1", A, None, T0)
    confirmed = record_send(reserved, LastSend(T0 + 5, "welcome", "d1"))
    assert release(confirmed, "d1").last is None


@pytest.mark.parametrize("other", ["d2", ""])
def test_release_of_a_replaced_reservation_changes_nothing(other):
    _, reserved = decide("d1", A, None, T0)
    later = record_send(reserved, LastSend(T0 + HOUR, "crm", other))
    assert release(later, "d1") is later
    assert release(None, "d1") is None


def test_replay_after_a_release_passes_with_the_same_id_and_reserves_nothing():
    _, reserved = decide("d1", A, None, T0)
    released = release(reserved, "d1")
    decision, state = decide("d1", A, released, T0)
    assert decision.outcome == PASSED
    assert state is released
