"""The cooldown rule: may an automation text a number now, given what was last sent to it?

Owns the decision and the number's state transitions, as pure functions: no I/O and no clock
(`now_ms` is always given), so a replayed trigger is decided exactly as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from streams.outcomes import (
    AUTOMATION_DISABLED,
    OUTSIDE_WINDOW,
    PASSED,
    RULE_OUTCOMES,
    SUPPRESSED_COOLDOWN,
)
from streams.window import SendingWindow, in_window

# A replay after a crash or rebalance covers the events since the last offset commit (about a
# second of work). It is recognised as long as the number had fewer later passes with cooldown
# in that window; consecutive such passes lie a cooldown apart in event time, so only a
# backfill of old triggers at thousands per second comes near this.
RECENT_PASSES = 16


@dataclass(frozen=True)
class LastSend:
    at_ms: int  # when the SMS was sent (or reserved)
    origin: str  # automation id, or the name of the outside system that sent it
    ref: str  # decision id, or the outside system's message id ("" if none)


@dataclass(frozen=True)
class NumberState:
    last: LastSend | None = None
    recent_passes: tuple[str, ...] = ()  # decision ids of the latest passes, oldest first
    # What `last` replaced, so that a reservation whose SMS the gateway finally
    # refused can be released.
    previous: LastSend | None = None


@dataclass(frozen=True)
class AutomationTerms:
    automation_id: str
    enabled: bool
    cooldown_enabled: bool
    cooldown_ms: int  # > 0 when cooldown_enabled
    window: SendingWindow | None  # None = any time

    def __post_init__(self) -> None:
        if self.cooldown_enabled and self.cooldown_ms <= 0:
            raise ValueError("a cooldown needs an interval greater than zero")


@dataclass(frozen=True)
class Decision:
    decision_id: str
    outcome: str
    decided_at_ms: int
    cause: LastSend | None = None  # the earlier SMS that caused a suppression

    def __post_init__(self) -> None:
        if self.outcome not in RULE_OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")


def decision_id_for(event_id: str, automation_id: str) -> str:
    """Deterministic id of one automation's decision on one trigger event."""
    digest = hashlib.sha256(f"{event_id}\x1f{automation_id}".encode()).hexdigest()
    return digest[:32]


def decide(
    decision_id: str, terms: AutomationTerms, state: NumberState | None, now_ms: int
) -> tuple[Decision, NumberState | None]:
    """Decide one trigger for one number; returns the decision and the number's new state."""
    if state is not None and decision_id in state.recent_passes:
        # Already passed and reserved before a crash or rebalance: pass again, reserve nothing.
        return Decision(decision_id, PASSED, now_ms), state
    if not terms.enabled:
        return Decision(decision_id, AUTOMATION_DISABLED, now_ms), state
    if terms.window is not None and not in_window(terms.window, now_ms):
        return Decision(decision_id, OUTSIDE_WINDOW, now_ms), state
    last = state.last if state is not None else None
    # A last send dated after now (clock skew, a reservation ahead of us) also suppresses.
    if terms.cooldown_enabled and last is not None and now_ms - last.at_ms < terms.cooldown_ms:
        return Decision(decision_id, SUPPRESSED_COOLDOWN, now_ms, cause=last), state
    # Reserve the number now, not when the SMS goes out, so a second automation deciding before
    # the send is confirmed is already held back. Automations without cooldown reserve too:
    # their SMS count for the others.
    reservation = LastSend(now_ms, terms.automation_id, decision_id)
    if last is not None and last.at_ms > now_ms:
        reservation = last  # never move the clock backwards
    passes = state.recent_passes if state is not None else ()
    # Only a pass that a replay could decide differently needs remembering: without
    # cooldown a replay passes anyway, and remembering it would push out the passes
    # that do need it.
    if terms.cooldown_enabled:
        passes = (*passes, decision_id)[-RECENT_PASSES:]
    previous = last if reservation is not last else (state.previous if state else None)
    return Decision(decision_id, PASSED, now_ms), NumberState(reservation, passes, previous)


def record_send(state: NumberState | None, send: LastSend) -> NumberState:
    """State after an SMS really went out, from any origin; recording it twice changes nothing."""
    if state is None:
        return NumberState(last=send)
    if state.last is not None and state.last.at_ms > send.at_ms:
        return state
    if state.last is not None and state.last.ref == send.ref and send.ref:
        # Our own reservation confirmed by its send: what it replaced stays releasable.
        return NumberState(send, state.recent_passes, state.previous)
    return NumberState(send, state.recent_passes, state.last)


def release(state: NumberState | None, decision_id: str) -> NumberState | None:
    """State after the SMS of a passed decision was finally not sent (the gateway
    refused it): its reservation no longer counts. Only the latest reservation can be
    released; one that later SMS replaced no longer decides anything."""
    if state is None or state.last is None or state.last.ref != decision_id:
        return state
    return NumberState(state.previous, state.recent_passes, None)
