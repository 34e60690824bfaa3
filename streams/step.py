"""One number event applied to one number's state: the cooldown agent's whole logic.

`step(state, event) -> (new_state, outputs)` is pure: no I/O, no clock (an event is
decided at its own `at_ms`), so a replayed bundle is decided exactly as before. The
cooldown agent, the in-process tests and the benchmark's plain loop all call it.

Held messages: a trigger that may not go out now is held in the number's state (the
rule says until when); the agent's release timer steps a `due` event for the number
when one comes due, and the rule is applied again at that moment. Of the messages due
together at most one goes out; an operator's cancel ends those of one automation.

Opt-outs: a number that opted out gets `opted_out` for every trigger of an automation
not marked transactional, before the rule is asked; its opt-out ends such messages
held for it, and any that come due while it is opted out. A number whose sends the
gateway refused for good so many times in a row is opted out here, and the opt-out
record that says so is among the outputs.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from streams.outcomes import (
    AUTOMATION_DISABLED,
    CANCELLED,
    COLLAPSED,
    DEFERRED_COOLDOWN,
    EXPIRED,
    HELD_WINDOW,
    HOLD_OUTCOMES,
    OPT_OUT_BY_FAILED_DELIVERIES,
    OPTED_OUT,
    OUTSIDE_WINDOW,
    PASSED,
    RELEASED,
    SUPPRESSED_COOLDOWN,
)
from streams.records import (
    CANCEL_EVENT,
    DUE_EVENT,
    ERASE_EVENT,
    FAILED_EVENT,
    OPT_OUT_EVENT,
    RELEASE_EVENT,
    TRIGGER_EVENT,
    DecisionRecord,
    NumberEvent,
    OptOut,
    SendRequest,
)
from streams.rule import (
    AutomationTerms,
    Decision,
    Held,
    LastSend,
    NumberState,
    OptedOut,
    clear_failures,
    decide,
    expire_at_once,
    held_by_id,
    hold,
    judge,
    note_failure,
    opt_out,
    opted_out_after,
    record_send,
    release,
    reserve,
    unhold,
)
from streams.window import SendingWindow, parse_window

Output = DecisionRecord | SendRequest | OptOut

_TRIGGER_FIELDS = ("event_id", "decision_id", "automation_id", "text", "sender")
# A number's state is read whole for every event of it: a number that piles up more
# held messages than this expires the newest at once.
MAX_HELD_PER_NUMBER = 100


class InvalidEvent(ValueError):
    """A number event that cannot be applied; only a bug or a foreign writer makes one."""


@lru_cache(maxsize=1024)
def _window(spec: str, tz: str) -> SendingWindow | None:
    return None if spec == "always" else parse_window(spec, tz)


def terms_of(event: NumberEvent) -> AutomationTerms:
    """The automation's terms a trigger carries."""
    missing = [name for name in _TRIGGER_FIELDS if getattr(event, name) is None]
    if missing:
        raise InvalidEvent(f"a trigger number event without {', '.join(missing)}")
    try:
        return AutomationTerms(
            automation_id=event.automation_id,  # type: ignore[arg-type]
            enabled=event.enabled,
            cooldown_enabled=event.cooldown_enabled,
            cooldown_ms=event.cooldown_ms,
            window=_window(event.window, event.timezone),
            hold_outside_window=event.hold_outside_window,
            defer_on_cooldown=event.defer_on_cooldown,
            max_hold_ms=event.max_hold_ms,
            priority=event.priority,
            transactional=event.transactional,
        )
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None


def _terms_of_held(held: Held) -> AutomationTerms:
    return AutomationTerms(
        automation_id=held.automation_id, enabled=True,
        cooldown_enabled=held.cooldown_ms > 0, cooldown_ms=held.cooldown_ms,
        window=_window(held.window, held.timezone),
        hold_outside_window=held.hold_outside_window,
        defer_on_cooldown=held.defer_on_cooldown,
        max_hold_ms=held.deadline_ms - held.trigger_at_ms, priority=held.priority,
        transactional=held.transactional,
    )


def step(state: NumberState | None,
         event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """The number's state after `event`, and the records it gives: for a trigger its
    decision and, when it passed, its send request; for held messages coming due or
    cancelled, theirs; nothing for a send or a release. Held messages due by the
    event's time are released before it is applied."""
    if event.kind == DUE_EVENT:
        return _release_due(state, event)
    if state is not None and state.held and \
            any(h.release_at_ms <= event.at_ms for h in state.held):
        # What came due before this event goes first, whether or not the release timer
        # has come round yet: the number's history stays in event-time order.
        state, released = _release_due(state, replace(event, kind=DUE_EVENT))
        state, records = step(state, event)
        return state, released + records
    if event.kind == TRIGGER_EVENT:
        return _decide(state, event)
    if event.kind == CANCEL_EVENT:
        return _cancel(state, event)
    if event.kind == OPT_OUT_EVENT:
        return _opt_out(state, event)
    if event.kind == FAILED_EVENT:
        return _failed(state, event)
    if event.kind == ERASE_EVENT:
        return _erase(state, event.at_ms)
    if event.kind == RELEASE_EVENT:
        if not event.decision_id:
            raise InvalidEvent("a release without decision_id")
        return release(state, event.decision_id), []
    state = record_send(state, LastSend(event.at_ms, event.origin or "unknown",
                                        event.ref or ""))
    if event.decision_id and state.failed_in_a_row:
        state = clear_failures(state)  # a send of ours went out: no longer in a row
    return state, []


def _decide(state: NumberState | None,
            event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    terms = terms_of(event)
    decision_id: str = event.decision_id  # type: ignore[assignment]
    if state is not None and state.held:
        held = held_by_id(state, decision_id)
        if held is not None:
            # A replay of a trigger that is held: the same decision again.
            return state, [_held_record(held, event.e164, held.reason, event.at_ms,
                                        held.release_at_ms, None)]
    if state is not None and decision_id in state.expired:
        # A replay of a trigger that expired at once: its decision again (the first may
        # have been lost with a worker whose state's changelog record was not).
        return state, [_record(event, EXPIRED, Decision(decision_id, EXPIRED, event.at_ms))]
    if state is not None and decision_id in state.finished:
        return state, []  # a replay of a held message that is done with: nothing new
    if state is not None and state.opted_out is not None and not terms.transactional \
            and decision_id not in state.recent_passes:
        # A pass replayed after the opt-out passed before it: decided as then.
        return state, [_record(event, OPTED_OUT, Decision(decision_id, OPTED_OUT, event.at_ms),
                               detail=_opted_out_detail(state.opted_out))]
    decision, new_state = decide(decision_id, terms, state, event.at_ms)
    if decision.outcome in HOLD_OUTCOMES and state is not None \
            and len(state.held) >= MAX_HELD_PER_NUMBER:
        return expire_at_once(state, decision_id), [_record(event, EXPIRED, decision, detail=(
            f"the number already has {MAX_HELD_PER_NUMBER} held messages"))]
    record = _record(event, decision.outcome, decision)
    if decision.outcome == EXPIRED:
        # A replay must not find it holdable by then (a later SMS, a shorter wait).
        return expire_at_once(state, decision_id), [record]
    if decision.outcome in HOLD_OUTCOMES:
        held = Held(
            decision_id=decision_id, event_id=event.event_id,  # type: ignore[arg-type]
            automation_id=terms.automation_id, text=event.text,  # type: ignore[arg-type]
            sender=event.sender,  # type: ignore[arg-type]
            reason=decision.outcome, trigger_at_ms=event.at_ms,
            release_at_ms=decision.release_at_ms,  # type: ignore[arg-type]
            deadline_ms=event.at_ms + terms.max_hold_ms, priority=terms.priority,
            cooldown_ms=terms.cooldown_ms if terms.cooldown_enabled else 0,
            defer_on_cooldown=terms.defer_on_cooldown,
            hold_outside_window=terms.hold_outside_window,
            window=event.window, timezone=event.timezone,
            source_topic=event.source_topic, source_partition=event.source_partition,
            source_offset=event.source_offset, transactional=terms.transactional)
        return hold(state, held), [record]
    if decision.outcome != PASSED:
        return new_state, [record]
    return new_state, [record, SendRequest(
        decision_id=decision_id,
        event_id=event.event_id,  # type: ignore[arg-type]
        automation_id=terms.automation_id,
        e164=event.e164,
        text=event.text,  # type: ignore[arg-type]
        sender=event.sender,  # type: ignore[arg-type]
        decided_at_ms=decision.decided_at_ms,
    )]


def _release_due(state: NumberState | None,
                 event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """The held messages due by `event.at_ms`, a release time at a time, earliest first:
    each is decided at its own release time, after what went out before it."""
    records: list[Output] = []
    while state is not None:
        due = [h for h in state.held if h.release_at_ms <= event.at_ms]
        if not due:
            break
        # A message held again goes to a later time than the one it was due at, so
        # this ends.
        at = min(h.release_at_ms for h in due)
        state, released = _release_together(
            state, [h for h in due if h.release_at_ms == at], at, event.e164)
        records += released
    return state, records


def _release_together(state: NumberState, due: list[Held], at: int,
                      e164: str) -> tuple[NumberState, list[Output]]:
    """Messages due at the same moment `at`: the highest priority (then the newest
    trigger) that the rule lets through goes out; the others are collapsed and decided
    again after it."""
    due.sort(key=lambda h: (-h.priority, -h.trigger_at_ms, h.decision_id))
    records: list[Output] = []
    went_out: Held | None = None
    for held in due:
        if state.opted_out is not None and not held.transactional:
            # Only a hold older than the opt-out, which ended those it found.
            state = unhold(state, held.decision_id)
            records.append(_held_record(held, e164, OPTED_OUT, at, None, None,
                                        _opted_out_detail(state.opted_out)))
            continue
        if went_out is not None:
            records.append(_held_record(held, e164, COLLAPSED, at, None, None, (
                f"another message held for the number went out at the same release "
                f"(decision {went_out.decision_id})")))
        terms = _terms_of_held(held)
        verdict = judge(terms, state.last, at, held.deadline_ms)
        if verdict.outcome in HOLD_OUTCOMES:
            assert verdict.release_at_ms is not None  # a hold always says until when
            state = hold(state, replace(held, reason=verdict.outcome,
                                        release_at_ms=verdict.release_at_ms))
        else:
            state = unhold(state, held.decision_id)
        if verdict.outcome == PASSED:
            if went_out is None:
                went_out = held
                state = reserve(state, terms, held.decision_id, at, remember=False)
                records.append(_held_record(held, e164, RELEASED, at, None, None))
                records.append(SendRequest(
                    decision_id=held.decision_id, event_id=held.event_id,
                    automation_id=held.automation_id, e164=e164, text=held.text,
                    sender=held.sender, decided_at_ms=at))
            continue  # collapsed for good: it would have gone out beside the other
        records.append(_held_record(held, e164, verdict.outcome, at,
                                    verdict.release_at_ms, verdict.cause))
    return state, records


def _cancel(state: NumberState | None,
            event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """End the held messages of `event.automation_id` triggered up to `event.at_ms`;
    each gets the outcome the cancel names (`event.origin`)."""
    if state is None or not state.held:
        return state, []
    outcome = event.origin if event.origin in (CANCELLED, AUTOMATION_DISABLED) else CANCELLED
    records: list[Output] = []
    for held in state.held:
        if held.automation_id == event.automation_id and held.trigger_at_ms <= event.at_ms:
            state = unhold(state, held.decision_id)
            records.append(_held_record(held, event.e164, outcome, event.at_ms, None, None))
    return state, records


def _opt_out(state: NumberState | None,
             event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """The number opting out (`event.enabled`) or back in (`opted_out_after`). An
    opt-out ends the messages held for it that are not transactional."""
    current = state.opted_out if state is not None else None
    mark = opted_out_after(current, event.enabled, event.at_ms, event.origin or "unknown")
    if mark == current:
        return state, []
    state = opt_out(state, mark)
    if mark is None or state is None:
        return state, []
    records: list[Output] = []
    for held in state.held:
        if not held.transactional:
            state = unhold(state, held.decision_id)
            records.append(_held_record(held, event.e164, OPTED_OUT, event.at_ms, None, None,
                                        _opted_out_detail(state.opted_out)))
    return state, records


def _failed(state: NumberState | None,
            event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """A send refused for good: the `failures_to_opt_out`-th in a row opts the number
    out (channel auto_failed_deliveries), and says so on sms.optouts."""
    if not event.decision_id:
        raise InvalidEvent("a failed send without decision_id")
    keep = event.failures_to_opt_out
    if keep <= 0 or (state is not None and state.opted_out is not None):
        return state, []
    state = note_failure(state, event.decision_id, keep)
    if len(state.failed_in_a_row) < keep:
        return state, []
    state, records = _opt_out(clear_failures(state), replace(
        event, kind=OPT_OUT_EVENT, enabled=True, origin=OPT_OUT_BY_FAILED_DELIVERIES))
    return state, [OptOut(phone=event.e164, opted_out=True, at_ms=event.at_ms,
                          channel=OPT_OUT_BY_FAILED_DELIVERIES), *records]


def _erase(state: NumberState | None,
           at_ms: int) -> tuple[NumberState | None, list[Output]]:
    """The number forgotten: its held messages end (`cancelled`, their decisions no
    longer naming it), and of its state only an opt-out stays, so that it is not
    texted again."""
    if state is None:
        return None, []
    records: list[Output] = [
        _held_record(held, None, CANCELLED, at_ms, None, None,
                     "held, and ended by the erasure of the number")
        for held in state.held]
    return (NumberState(opted_out=state.opted_out) if state.opted_out else None), records


def _opted_out_detail(mark: OptedOut | None) -> str:
    assert mark is not None
    return f"the number opted out of SMS at {mark.at_ms} (by {mark.channel})"


def _record(event: NumberEvent, outcome: str, decision: Decision,
            detail: str | None = None) -> DecisionRecord:
    cause = decision.cause
    return DecisionRecord(
        decision_id=event.decision_id,  # type: ignore[arg-type]
        event_id=event.event_id,  # type: ignore[arg-type]
        automation_id=event.automation_id,
        e164=event.e164,
        outcome=outcome,
        detail=detail or describe(outcome, cause, decision.release_at_ms),
        decided_at_ms=decision.decided_at_ms,
        source_topic=event.source_topic,
        source_partition=event.source_partition,
        source_offset=event.source_offset,
        cause_at_ms=cause.at_ms if cause else None,
        cause_origin=cause.origin if cause else None,
        cause_ref=cause.ref if cause else None,
        release_at_ms=decision.release_at_ms,
    )


def _held_record(held: Held, e164: str | None, outcome: str, at_ms: int,
                 release_at_ms: int | None, cause: LastSend | None,
                 detail: str | None = None) -> DecisionRecord:
    return DecisionRecord(
        decision_id=held.decision_id, event_id=held.event_id,
        automation_id=held.automation_id, e164=e164, outcome=outcome,
        detail=detail or describe(outcome, cause, release_at_ms),
        decided_at_ms=at_ms, source_topic=held.source_topic,
        source_partition=held.source_partition, source_offset=held.source_offset,
        cause_at_ms=cause.at_ms if cause else None,
        cause_origin=cause.origin if cause else None,
        cause_ref=cause.ref if cause else None,
        release_at_ms=release_at_ms,
    )


_DETAILS = {
    PASSED: "passed the cooldown; the number is reserved",
    OUTSIDE_WINDOW: "outside the automation's sending window",
    AUTOMATION_DISABLED: "the automation is disabled",
    HELD_WINDOW: "outside the sending window; held until it opens",
    RELEASED: "released: its hold ended and the rule lets it through; the number is reserved",
    EXPIRED: "it could not go out before its deadline",
    CANCELLED: "held, and cancelled by an operator",
}


def describe(outcome: str, cause: LastSend | None, release_at_ms: int | None = None) -> str:
    """The decision's sentence saying why, without the raw number."""
    if cause is not None:
        said = f"the number got an SMS from {cause.origin} at {cause.at_ms} (ref {cause.ref})"
        if outcome == DEFERRED_COOLDOWN:
            return f"{said}; deferred until the cooldown ends"
        if outcome == EXPIRED:
            return f"{said}; the cooldown ends past the message's deadline"
        if outcome == SUPPRESSED_COOLDOWN:
            return said
    if outcome == EXPIRED and release_at_ms is not None:
        return f"it could go out only at {release_at_ms}, past its deadline"
    return _DETAILS.get(outcome, outcome)
