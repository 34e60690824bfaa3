"""The stateless first step: decode what producers wrote, normalize the number to
E.164 and re-key by it.

A pure function of one input record and the automation catalog. It returns what to
write: number events for the cooldown agent, decision records for triggers that can
be decided without state (an invalid number, an unknown automation, …), and dead
letters for records that cannot be read at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams import codecs, topics
from streams.automations import (
    DEFER,
    HOLD,
    Automation,
    Catalog,
    MissingAttribute,
    UnknownAutomation,
)
from streams.erasure import HASHED_PREFIX
from streams.numbers import InvalidNumber, to_e164
from streams.outcomes import (
    DELIVERY_ACCEPTED,
    DELIVERY_FAILED,
    FUTURE_SEND,
    FUTURE_TRIGGER,
    INVALID_NUMBER,
    INVALID_RECORD,
    MESSAGE_TOO_LONG,
    MISSING_ATTRIBUTE,
    NO_MATCHING_AUTOMATION,
    STALE_TRIGGER,
    UNKNOWN_AUTOMATION,
)
from streams.records import (
    ERASE_EVENT,
    FAILED_EVENT,
    OPT_OUT_EVENT,
    RELEASE_EVENT,
    SENT_EVENT,
    TRIGGER_EVENT,
    DeadLetter,
    DecisionRecord,
    NumberEvent,
    Source,
)
from streams.rule import decision_id_for
from streams.window import ALWAYS, recipient_zone

# Gateways split long texts into concatenated SMS of 153 characters and stop at about
# ten; a longer text (a runaway attribute) would also bloat every record downstream.
MAX_TEXT_CHARS = 1530
# An outside system's name and message id, and automation ids, are kept per number.
MAX_REF_BYTES = 200

__all__ = ["Limits", "Output", "Source", "dead_letter", "route"]


@dataclass(frozen=True)
class Output:
    """A record to write: to the cooldown agent (a NumberEvent, keyed by its E.164),
    or straight to sms.decisions or sms.deadletter."""

    topic: str
    key: bytes
    record: NumberEvent | DecisionRecord | DeadLetter

    @property
    def value(self) -> dict[str, Any]:
        """The record as its topic's codec encodes it."""
        return self.record.to_dict()


@dataclass(frozen=True)
class Limits:
    max_clock_skew_ms: int
    max_trigger_age_ms: int
    # Sends refused for good in a row that opt a number out (0: never).
    opt_out_after_failures: int = 0


def route(source: Source, catalog: Catalog, limits: Limits) -> list[Output]:
    if source.topic == topics.SENT:
        return _route_sent(source, limits)
    if source.topic == topics.DELIVERY:
        return _route_delivery(source, catalog, limits)
    if source.topic == topics.OPTOUTS:
        return _route_opt_out(source)
    if source.topic == topics.ERASURES:
        return _route_erasure(source)
    return _route_trigger(source, catalog, limits)


def dead_letter(source: Source, now_ms: int, reason: str, detail: str) -> Output:
    return Output(topics.DEADLETTER, source.key or b"",
                  DeadLetter.of(source, reason, detail, now_ms))


def _decision(source: Source, trigger: dict[str, Any], automation_id: str | None,
              outcome: str, detail: str, e164: str | None = None) -> Output:
    event_id = trigger["event_id"]
    return Output(topics.DECISIONS, (e164 or event_id).encode(), DecisionRecord(
        decision_id=decision_id_for(event_id, automation_id or ""),
        event_id=event_id,
        automation_id=automation_id,
        e164=e164,
        outcome=outcome,
        detail=detail,
        decided_at_ms=source.timestamp_ms,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
    ))


def _route_trigger(source: Source, catalog: Catalog, limits: Limits) -> list[Output]:
    now = source.timestamp_ms
    try:
        trigger = codecs.TRIGGER.decode(source.value)
    except codecs.CodecError as exc:
        return [dead_letter(source, now, exc.reason, exc.detail)]
    if not trigger["event_id"].strip():
        return [dead_letter(source, now, INVALID_RECORD, "event_id is empty")]
    try:
        automations = catalog.for_trigger(trigger)
    except UnknownAutomation as exc:
        return [_decision(source, trigger, str(exc.args[0]), UNKNOWN_AUTOMATION,
                          f"no automation has the id {exc.args[0]!r}")]
    if not automations:
        return [_decision(source, trigger, None, NO_MATCHING_AUTOMATION,
                          f"no automation answers event type {trigger['event_type']!r}"
                          f" and segment {trigger['segment']!r}")]
    return [_route_trigger_to(source, trigger, a, limits) for a in automations]


def _route_trigger_to(source: Source, trigger: dict[str, Any], automation: Automation,
                      limits: Limits) -> Output:
    now = source.timestamp_ms
    automation_id = automation.automation_id
    occurred = trigger["occurred_at_ms"]
    if occurred > now + limits.max_clock_skew_ms:
        return _decision(source, trigger, automation_id, FUTURE_TRIGGER,
                         f"occurred_at is {occurred - now} ms after the trigger reached Kafka")
    if occurred < now - limits.max_trigger_age_ms:
        return _decision(source, trigger, automation_id, STALE_TRIGGER,
                         f"occurred_at is {now - occurred} ms before the trigger reached Kafka")
    try:
        e164 = to_e164(trigger["phone"], automation.country)
    except InvalidNumber as exc:
        return _decision(source, trigger, automation_id, INVALID_NUMBER,
                         f"{exc.reason}: {exc}")
    try:
        text = automation.render(trigger["attributes"])
    except MissingAttribute as exc:
        return _decision(source, trigger, automation_id, MISSING_ATTRIBUTE,
                         f"the message needs the attribute {exc.args[0]!r}", e164)
    if len(text) > MAX_TEXT_CHARS:
        return _decision(source, trigger, automation_id, MESSAGE_TOO_LONG,
                         f"the message is {len(text)} characters, more than {MAX_TEXT_CHARS}",
                         e164)
    return Output(topics.BY_NUMBER, e164.encode(), NumberEvent(
        kind=TRIGGER_EVENT,
        e164=e164,
        at_ms=now,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        event_id=trigger["event_id"],
        decision_id=decision_id_for(trigger["event_id"], automation_id),
        automation_id=automation_id,
        enabled=automation.enabled,
        cooldown_enabled=automation.cooldown_enabled,
        cooldown_ms=automation.cooldown_ms,
        window=automation.window,
        timezone=automation.zone if automation.window == ALWAYS
        else recipient_zone(e164, automation.zone),
        text=text,
        sender=automation.sender,
        hold_outside_window=automation.outside_window == HOLD,
        defer_on_cooldown=automation.on_cooldown == DEFER,
        max_hold_ms=automation.max_hold_ms,
        priority=automation.priority,
        transactional=automation.transactional,
    ))


def _number_event(source: Source, kind: str, e164: str, at_ms: int,
                  **fields: Any) -> Output:
    return Output(topics.BY_NUMBER, e164.encode(), NumberEvent(
        kind=kind, e164=e164, at_ms=at_ms, source_topic=source.topic,
        source_partition=source.partition, source_offset=source.offset, **fields))


def _route_delivery(source: Source, catalog: Catalog, limits: Limits) -> list[Output]:
    """A send the gateway finally refused releases its reservation, unless its
    automation says refused sends still count; one refused for good (`failed`) also
    counts towards opting the number out, when the deployment does that. Accepted
    sends come back on sms.sent."""
    now = source.timestamp_ms
    try:
        outcome = codecs.DELIVERY_OUTCOME.decode(source.value)
    except codecs.CodecError as exc:
        return [dead_letter(source, now, exc.reason, exc.detail)]
    # An ambiguous attempt may have reached the phone: the reservation stays.
    if outcome["outcome"] == DELIVERY_ACCEPTED or outcome["ambiguous"]:
        return []
    events = []
    automation = catalog.get(outcome["automation_id"])
    if automation is None or not automation.failed_sends_count:
        events.append(_number_event(source, RELEASE_EVENT, outcome["e164"], outcome["at_ms"],
                                    decision_id=outcome["decision_id"],
                                    automation_id=outcome["automation_id"]))
    if outcome["outcome"] == DELIVERY_FAILED and limits.opt_out_after_failures > 0:
        events.append(_number_event(source, FAILED_EVENT, outcome["e164"], outcome["at_ms"],
                                    decision_id=outcome["decision_id"],
                                    automation_id=outcome["automation_id"],
                                    failures_to_opt_out=limits.opt_out_after_failures))
    return events


def _route_sent(source: Source, limits: Limits) -> list[Output]:
    now = source.timestamp_ms
    try:
        sent = codecs.SENT.decode(source.value)
    except codecs.CodecError as exc:
        return [dead_letter(source, now, exc.reason, exc.detail)]
    refused = _too_long(source, sent, ("origin", "decision_id", "message_id"))
    if refused:
        return refused
    e164 = _number_in(source, sent)
    if not isinstance(e164, str):
        return e164
    if sent["sent_at_ms"] > now + limits.max_clock_skew_ms:
        ahead = sent["sent_at_ms"] - now
        return [dead_letter(source, now, FUTURE_SEND,
                            f"sent_at is {ahead} ms after the record reached Kafka")]
    return [_number_event(source, SENT_EVENT, e164, sent["sent_at_ms"],
                          decision_id=sent["decision_id"], origin=sent["origin"],
                          ref=sent["decision_id"] or sent["message_id"] or "")]


def _route_opt_out(source: Source) -> list[Output]:
    """A number opting out or back in, for the agent that owns it. The key is not
    read: other systems key the topic as they like."""
    now = source.timestamp_ms
    if source.value is None:
        return []  # a tombstone: an erasure's, or compaction's own
    try:
        record = codecs.OPT_OUT.decode(source.value)
    except codecs.CodecError as exc:
        return [dead_letter(source, now, exc.reason, exc.detail)]
    if record["phone"].startswith(HASHED_PREFIX):
        return []  # an erased number's: the cooldown table keeps it by the same hash
    refused = _too_long(source, record, ("channel", "scope"))
    if refused:
        return refused
    e164 = _number_in(source, record)
    if not isinstance(e164, str):
        return e164
    # Dated no later than it reached Kafka: an opt-out dated ahead would otherwise undo
    # an opt-in that came after it.
    return [_number_event(source, OPT_OUT_EVENT, e164, min(record["at_ms"], now),
                          enabled=record["opted_out"], origin=record["channel"] or "unknown",
                          ref=record["scope"])]


def _route_erasure(source: Source) -> list[Output]:
    now = source.timestamp_ms
    try:
        record = codecs.ERASURE.decode(source.value)
    except codecs.CodecError as exc:
        return [dead_letter(source, now, exc.reason, exc.detail)]
    e164 = _number_in(source, record)
    if not isinstance(e164, str):
        return e164
    by = record["requested_by"][:MAX_REF_BYTES] or "unknown"
    return [_number_event(source, ERASE_EVENT, e164, min(record["requested_at_ms"], now),
                          origin=by)]


def _too_long(source: Source, record: dict[str, Any], names: tuple[str, ...]) -> list[Output]:
    """A dead letter when one of the strings `names` is too long to keep in a number's
    state (which keeps its strings short); nothing otherwise."""
    too_long = [name for name in names if len((record[name] or "").encode()) > MAX_REF_BYTES]
    if not too_long:
        return []
    return [dead_letter(source, source.timestamp_ms, INVALID_RECORD,
                        f"{', '.join(too_long)} longer than {MAX_REF_BYTES} bytes")]


def _number_in(source: Source, record: dict[str, Any]) -> str | list[Output]:
    """The E.164 form of the record's `phone` (with its `country`), or the dead letter
    that says why there is none."""
    try:
        return to_e164(record["phone"], record["country"])
    except InvalidNumber as exc:
        return [dead_letter(source, source.timestamp_ms, INVALID_NUMBER,
                            f"{exc.reason}: {exc}")]
    except ValueError as exc:  # the country itself is unknown
        return [dead_letter(source, source.timestamp_ms, INVALID_RECORD, str(exc))]
