"""One number event applied to one number's state: the cooldown agent's whole logic.

`step(state, event) -> (new_state, outputs)` is pure: no I/O, no clock (a trigger is
decided at its own `at_ms`), so a replayed bundle is decided exactly as before. The
cooldown agent, the in-process tests and the benchmark's plain loop all call it.
"""

from __future__ import annotations

from functools import lru_cache

from streams.outcomes import AUTOMATION_DISABLED, OUTSIDE_WINDOW, PASSED
from streams.records import RELEASE_EVENT, TRIGGER_EVENT, DecisionRecord, NumberEvent, SendRequest
from streams.rule import AutomationTerms, LastSend, NumberState, decide, record_send, release
from streams.window import SendingWindow, parse_window

Output = DecisionRecord | SendRequest

_TRIGGER_FIELDS = ("event_id", "decision_id", "automation_id", "text", "sender")


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
        )
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None


def step(state: NumberState | None,
         event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    """The number's state after `event`, and the records it gives: for a trigger its
    decision and, when it passed, its send request; nothing for a send or a release."""
    if event.kind == TRIGGER_EVENT:
        return _decide(state, event)
    if event.kind == RELEASE_EVENT:
        if not event.decision_id:
            raise InvalidEvent("a release without decision_id")
        return release(state, event.decision_id), []
    return record_send(state, LastSend(event.at_ms, event.origin or "unknown",
                                       event.ref or "")), []


def _decide(state: NumberState | None,
            event: NumberEvent) -> tuple[NumberState | None, list[Output]]:
    terms = terms_of(event)
    decision, new_state = decide(event.decision_id, terms, state,  # type: ignore[arg-type]
                                 event.at_ms)
    cause = decision.cause
    record = DecisionRecord(
        decision_id=decision.decision_id,
        event_id=event.event_id,  # type: ignore[arg-type]
        automation_id=event.automation_id,
        e164=event.e164,
        outcome=decision.outcome,
        detail=detail(decision.outcome, cause),
        decided_at_ms=decision.decided_at_ms,
        source_topic=event.source_topic,
        source_partition=event.source_partition,
        source_offset=event.source_offset,
        cause_at_ms=cause.at_ms if cause else None,
        cause_origin=cause.origin if cause else None,
        cause_ref=cause.ref if cause else None,
    )
    if decision.outcome != PASSED:
        return new_state, [record]
    return new_state, [record, SendRequest(
        decision_id=decision.decision_id,
        event_id=event.event_id,  # type: ignore[arg-type]
        automation_id=event.automation_id,  # type: ignore[arg-type]
        e164=event.e164,
        text=event.text,  # type: ignore[arg-type]
        sender=event.sender,  # type: ignore[arg-type]
        decided_at_ms=decision.decided_at_ms,
    )]


_DETAILS = {
    PASSED: "passed the cooldown; the number is reserved",
    OUTSIDE_WINDOW: "outside the automation's sending window",
    AUTOMATION_DISABLED: "the automation is disabled",
}


def detail(outcome: str, cause: LastSend | None) -> str:
    """The decision's sentence saying why, without the raw number."""
    if cause is not None:
        return f"the number got an SMS from {cause.origin} at {cause.at_ms} (ref {cause.ref})"
    return _DETAILS.get(outcome, outcome)
