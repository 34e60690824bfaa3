"""The cooldown rule: may an automation text a number now, given what was last sent to it?
And if not now, when?

Owns the decision and the number's state transitions, as pure functions: no I/O and no clock
(`now_ms` is always given), so a replayed trigger is decided exactly as before. A message
that may not go out now is held in the number's state (`Held`) until the first moment it
may: the window's next opening, or the end of the cooldown; past its deadline it expires.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from streams.outcomes import (
    AUTOMATION_DISABLED,
    DEFERRED_COOLDOWN,
    EXPIRED,
    HELD_WINDOW,
    OUTSIDE_WINDOW,
    PASSED,
    RULE_OUTCOMES,
    SUPPRESSED_COOLDOWN,
)
from streams.window import SendingWindow, in_window, next_opening_ms

# A replay after a crash or rebalance covers the events since the last offset commit (about a
# second of work). It is recognised as long as the number had fewer later passes with cooldown
# in that window; consecutive such passes lie a cooldown apart in event time, so only a
# backfill of old triggers at thousands per second comes near this.
RECENT_PASSES = 16
# Held messages that are done with (and triggers that expired at once), remembered so
# that a replay does not hold them again. A number busy with holds finishes far more of
# them than it passes: one at its cap of held messages finishes every new hold at once.
# The chaos harness's hottest number (a tenth of all triggers) finishes about 75 in the
# span its producer retries reach back (5,000 triggers); 200 leaves room for more than
# twice that, at a few KB of decision ids in that number's state (and the state's
# encoding counts them in one byte).
RECENT_FINISHED = 200


@dataclass(frozen=True)
class LastSend:
    at_ms: int  # when the SMS was sent (or reserved)
    origin: str  # automation id, or the name of the outside system that sent it
    ref: str  # decision id, or the outside system's message id ("" if none)


@dataclass(frozen=True)
class Held:
    """A message waiting for its release: the trigger's decision, its text, and the
    automation's terms as they were when it was triggered."""

    decision_id: str
    event_id: str
    automation_id: str
    text: str
    sender: str
    reason: str  # HELD_WINDOW or DEFERRED_COOLDOWN
    trigger_at_ms: int
    release_at_ms: int
    deadline_ms: int  # it may go out up to and including this instant
    priority: int
    cooldown_ms: int  # 0: the automation has no cooldown
    defer_on_cooldown: bool
    hold_outside_window: bool
    window: str  # spec, as in `streams.window`
    timezone: str  # the recipient's zone, in which the window counts
    source_topic: str
    source_partition: int
    source_offset: int
    transactional: bool = False  # goes out to a number that opted out


@dataclass(frozen=True)
class OptedOut:
    """The number opted out of SMS: since when, and by which channel."""

    at_ms: int
    channel: str


@dataclass(frozen=True)
class NumberState:
    last: LastSend | None = None
    recent_passes: tuple[str, ...] = ()  # decision ids of the latest passes, oldest first
    # What `last` replaced, so that a reservation whose SMS the gateway finally
    # refused can be released.
    previous: LastSend | None = None
    held: tuple[Held, ...] = ()  # in the order they were held
    # Decision ids of the latest held messages that are done with (released, expired,
    # collapsed, cancelled), so that a replayed trigger is not held a second time.
    finished: tuple[str, ...] = ()
    opted_out: OptedOut | None = None
    # Decision ids of the number's latest sends, in a row, that the gateway refused for
    # good (an accepted send of ours clears them); enough of them opt it out.
    failed_in_a_row: tuple[str, ...] = ()
    # Decision ids of the latest triggers that expired at once (never held): a replay
    # gives their decision again, which may not have reached Kafka the first time.
    expired: tuple[str, ...] = ()
    # When the cooldown agent last wrote a state that has no `last` send: retention
    # dates such a state by it (0: not known).
    updated_at_ms: int = 0


@dataclass(frozen=True)
class AutomationTerms:
    automation_id: str
    enabled: bool
    cooldown_enabled: bool
    cooldown_ms: int  # > 0 when cooldown_enabled
    window: SendingWindow | None  # None = any time
    # Outside the window: hold until it opens, or decide `outside_window` at once.
    hold_outside_window: bool = False
    # Inside the cooldown: hold until it ends, or decide `suppressed_cooldown` at once.
    defer_on_cooldown: bool = False
    max_hold_ms: int = 0
    priority: int = 0
    # Sent to numbers that opted out, too (an order confirmation, a one-time code).
    transactional: bool = False

    def __post_init__(self) -> None:
        if self.cooldown_enabled and self.cooldown_ms <= 0:
            raise ValueError("a cooldown needs an interval greater than zero")
        if self.max_hold_ms < 0:
            raise ValueError("a maximum hold cannot be negative")


@dataclass(frozen=True)
class Decision:
    decision_id: str
    outcome: str
    decided_at_ms: int
    cause: LastSend | None = None  # the earlier SMS that caused a suppression or deferral
    release_at_ms: int | None = None  # held: when it goes out; expired: when it would have

    def __post_init__(self) -> None:
        if self.outcome not in RULE_OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")


def decision_id_for(event_id: str, automation_id: str) -> str:
    """Deterministic id of one automation's decision on one trigger event."""
    digest = hashlib.sha256(f"{event_id}\x1f{automation_id}".encode()).hexdigest()
    return digest[:32]


def judge(terms: AutomationTerms, last: LastSend | None, now_ms: int,
          deadline_ms: int) -> Decision:
    """What the rule says of a message for `terms` at `now_ms`, given the number's last
    SMS: pass, hold (and until when), or not at all. The decision id is left empty."""
    if not terms.enabled:
        return Decision("", AUTOMATION_DISABLED, now_ms)
    if terms.window is not None and not in_window(terms.window, now_ms):
        if not terms.hold_outside_window:
            return Decision("", OUTSIDE_WINDOW, now_ms)
        return _hold(HELD_WINDOW, next_opening_ms(terms.window, now_ms), now_ms,
                     deadline_ms, None)
    # A last send dated after now (clock skew, a reservation ahead of us) also suppresses.
    if terms.cooldown_enabled and last is not None and now_ms - last.at_ms < terms.cooldown_ms:
        if not terms.defer_on_cooldown:
            return Decision("", SUPPRESSED_COOLDOWN, now_ms, cause=last)
        ends = last.at_ms + terms.cooldown_ms
        release = next_opening_ms(terms.window, ends) if terms.window is not None else ends
        return _hold(DEFERRED_COOLDOWN, release, now_ms, deadline_ms, last)
    return Decision("", PASSED, now_ms)


def _hold(outcome: str, release_at_ms: int, now_ms: int, deadline_ms: int,
          cause: LastSend | None) -> Decision:
    if release_at_ms > deadline_ms:
        return Decision("", EXPIRED, now_ms, cause, release_at_ms)
    return Decision("", outcome, now_ms, cause, release_at_ms)


def decide(
    decision_id: str, terms: AutomationTerms, state: NumberState | None, now_ms: int
) -> tuple[Decision, NumberState | None]:
    """Decide one trigger for one number; returns the decision and the number's new state.

    A decision to hold leaves the state as it is: the caller, which has the message,
    holds it (`hold`)."""
    if state is not None and decision_id in state.recent_passes:
        # Already passed and reserved before a crash or rebalance: pass again, reserve nothing.
        return Decision(decision_id, PASSED, now_ms), state
    last = state.last if state is not None else None
    verdict = judge(terms, last, now_ms, now_ms + terms.max_hold_ms)
    decision = Decision(decision_id, verdict.outcome, now_ms, verdict.cause,
                        verdict.release_at_ms)
    if decision.outcome != PASSED:
        return decision, state
    return decision, reserve(state, terms, decision_id, now_ms)


def reserve(state: NumberState | None, terms: AutomationTerms, decision_id: str,
            now_ms: int, *, remember: bool = True) -> NumberState:
    """State after a pass at `now_ms`; `remember` the pass so that a replay passes again
    (a released message is remembered as finished instead)."""
    # Reserve the number now, not when the SMS goes out, so a second automation deciding before
    # the send is confirmed is already held back. Automations without cooldown reserve too:
    # their SMS count for the others.
    last = state.last if state is not None else None
    reservation = LastSend(now_ms, terms.automation_id, decision_id)
    if last is not None and last.at_ms > now_ms:
        reservation = last  # never move the clock backwards
    passes = state.recent_passes if state is not None else ()
    # Only a pass that a replay could decide differently needs remembering: without
    # cooldown a replay passes anyway, and remembering it would push out the passes
    # that do need it.
    if terms.cooldown_enabled and remember:
        passes = (*passes, decision_id)[-RECENT_PASSES:]
    previous = last if reservation is not last else (state.previous if state else None)
    if state is None:
        return NumberState(reservation, passes, previous)
    return NumberState(reservation, passes, previous, state.held, state.finished,
                       state.opted_out, state.failed_in_a_row, state.expired)


def hold(state: NumberState | None, held: Held) -> NumberState:
    """State with `held` waiting (in place of an earlier hold of the same decision)."""
    if state is None:
        return NumberState(held=(held,))
    others = tuple(h for h in state.held if h.decision_id != held.decision_id)
    return NumberState(state.last, state.recent_passes, state.previous, (*others, held),
                       state.finished, state.opted_out, state.failed_in_a_row, state.expired)


def unhold(state: NumberState, decision_id: str) -> NumberState:
    """State once the held message `decision_id` is done with, for good."""
    held = tuple(h for h in state.held if h.decision_id != decision_id)
    finished = (*state.finished, decision_id)[-RECENT_FINISHED:]
    return NumberState(state.last, state.recent_passes, state.previous, held, finished,
                       state.opted_out, state.failed_in_a_row, state.expired)


def expire_at_once(state: NumberState | None, decision_id: str) -> NumberState:
    """State that remembers `decision_id` as expired at once (never held), so that a
    replay gives the same decision again."""
    if state is None:
        return NumberState(expired=(decision_id,))
    expired = (*state.expired, decision_id)[-RECENT_FINISHED:]
    return NumberState(state.last, state.recent_passes, state.previous, state.held,
                       state.finished, state.opted_out, state.failed_in_a_row, expired)


def held_by_id(state: NumberState | None, decision_id: str) -> Held | None:
    if state is None:
        return None
    for held in state.held:
        if held.decision_id == decision_id:
            return held
    return None


def record_send(state: NumberState | None, send: LastSend) -> NumberState:
    """State after an SMS really went out, from any origin; recording it twice changes nothing."""
    if state is None:
        return NumberState(last=send)
    if state.last is not None and state.last.at_ms > send.at_ms:
        return state
    if state.last is not None and state.last.ref == send.ref and send.ref:
        # Our own reservation confirmed by its send: what it replaced stays releasable.
        return NumberState(send, state.recent_passes, state.previous, state.held,
                           state.finished, state.opted_out, state.failed_in_a_row, state.expired)
    return NumberState(send, state.recent_passes, state.last, state.held, state.finished,
                       state.opted_out, state.failed_in_a_row, state.expired)


def release(state: NumberState | None, decision_id: str) -> NumberState | None:
    """State after the SMS of a passed decision was finally not sent (the gateway
    refused it): its reservation no longer counts. Only the latest reservation can be
    released; one that later SMS replaced no longer decides anything."""
    if state is None or state.last is None or state.last.ref != decision_id:
        return state
    return NumberState(state.previous, state.recent_passes, None, state.held, state.finished,
                       state.opted_out, state.failed_in_a_row, state.expired)


def opted_out_after(current: OptedOut | None, opting_out: bool, at_ms: int,
                    channel: str) -> OptedOut | None:
    """Whether a number is opted out after a record of it on sms.optouts: an opt-out
    counts from the first time; an opt-in undoes an opt-out dated no later than it (a
    record that comes late does not undo a newer one)."""
    if opting_out:
        return current or OptedOut(at_ms, channel)
    if current is not None and at_ms < current.at_ms:
        return current
    return None


def note_failure(state: NumberState | None, decision_id: str, keep: int) -> NumberState:
    """State with one more of its sends refused for good (the latest `keep` kept; the
    same one twice counts once)."""
    if state is None:
        return NumberState(failed_in_a_row=(decision_id,))
    if decision_id in state.failed_in_a_row:
        return state
    failed = (*state.failed_in_a_row, decision_id)[-keep:]
    return NumberState(state.last, state.recent_passes, state.previous, state.held,
                       state.finished, state.opted_out, failed, state.expired)


def clear_failures(state: NumberState) -> NumberState:
    return NumberState(state.last, state.recent_passes, state.previous, state.held,
                       state.finished, state.opted_out, (), state.expired)


def opt_out(state: NumberState | None, mark: OptedOut | None) -> NumberState | None:
    """State with the number opted out since `mark`, or back in (None)."""
    if state is None:
        return None if mark is None else NumberState(opted_out=mark)
    return NumberState(state.last, state.recent_passes, state.previous, state.held,
                       state.finished, mark, state.failed_in_a_row, state.expired)


def retained(state: NumberState, now_ms: int, horizon_ms: int) -> NumberState | None:
    """What of a number's state is still worth keeping at `now_ms`: all of it while it
    holds messages or its last SMS is less than `horizon_ms` old (the longest cooldown
    and a margin: no rule looks further back); past that nothing, but an opt-out."""
    dated = state.last.at_ms if state.last is not None else state.updated_at_ms
    if state.held or now_ms - dated < horizon_ms:
        return state
    if state.opted_out is None:
        return None
    kept = NumberState(opted_out=state.opted_out)
    return state if replace(state, updated_at_ms=0) == kept else kept
