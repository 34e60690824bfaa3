"""The records the pipeline writes and reads, as frozen dataclasses.

One class per Avro schema in `schemas/`, with `to_dict` (what the codec encodes) and
`from_dict` (what it decoded). Code that builds or reads a record uses these, so a
field is named in one place and a typo fails at once instead of on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, TypeVar

R = TypeVar("R", bound="_Record")

TRIGGER_EVENT = "trigger"
SENT_EVENT = "sent"
RELEASE_EVENT = "release"
# An operator's cancel of an automation's held messages, one per bundle partition; its
# `origin` is the outcome the cancelled messages get.
CANCEL_EVENT = "cancel"
# Ingest's word that everything on input partition `source_topic[source_partition]` up
# to `at_ms` is in the bundles before this one: releases wait for it (`e164` empty).
PROGRESS_EVENT = "progress"
# A number opting out (`enabled` true) or back in (false), from sms.optouts; `origin`
# is the channel, `ref` the scope.
OPT_OUT_EVENT = "optout"
# A send of ours the gateway refused for good (sms.delivery `failed`): after
# `failures_to_opt_out` in a row the number is opted out.
FAILED_EVENT = "failed"
# The number is to be erased from the state (sms.erasures); `origin` says who asked.
ERASE_EVENT = "erase"
# Made by the cooldown agent's release timer, never written to Kafka: the number's held
# messages that are due at `at_ms`.
DUE_EVENT = "due"


class _Record:
    # Both run once per record on the hot path: no `asdict` (it deep-copies), and the
    # field names and their getter are worked out once per class.
    def to_dict(self) -> dict[str, Any]:
        names, values_of = _layout(type(self))
        return dict(zip(names, values_of(self), strict=True))

    @classmethod
    def from_dict(cls: type[R], record: dict[str, Any]) -> R:
        try:
            return cls(**record)
        except TypeError:
            # Only the schema's fields: a reader with a newer schema may see more.
            names, _ = _layout(cls)
            return cls(**{name: record[name] for name in names if name in record})


_LAYOUTS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _layout(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        layout = _LAYOUTS[cls] = (names, attrgetter(*names))
    return layout


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from; `timestamp_ms` is its Kafka timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class NumberEvent(_Record):
    """One event about one E.164 number, as ingest hands it to the cooldown agent: a
    trigger for one automation (with the automation's terms and the rendered text), a
    send from any origin, or the release of a reservation whose SMS was refused. Also
    an operator's cancel (for every number of a partition: `e164` is empty) and, inside
    the agent only, a number's held messages coming due; a number opting out of SMS or
    back in; a send of ours refused for good; and the number's erasure."""

    # TRIGGER_EVENT, SENT_EVENT, RELEASE_EVENT, CANCEL_EVENT, OPT_OUT_EVENT, FAILED_EVENT,
    # ERASE_EVENT or DUE_EVENT
    kind: str
    e164: str
    at_ms: int  # trigger: when it reached Kafka (the decision clock); sent: when it went out
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None = None
    decision_id: str | None = None
    automation_id: str | None = None
    enabled: bool = True
    cooldown_enabled: bool = False
    cooldown_ms: int = 0
    window: str = "always"
    timezone: str = "UTC"  # the recipient's: the window counts in the number's zone
    text: str | None = None
    sender: str | None = None
    origin: str | None = None
    ref: str | None = None
    hold_outside_window: bool = True
    defer_on_cooldown: bool = False
    max_hold_ms: int = 0
    priority: int = 0
    transactional: bool = False
    failures_to_opt_out: int = 0


@dataclass(frozen=True, slots=True)
class DecisionRecord(_Record):
    """What became of one trigger for one automation (topic sms.decisions)."""

    decision_id: str
    event_id: str
    automation_id: str | None
    e164: str | None
    outcome: str
    detail: str
    decided_at_ms: int
    source_topic: str
    source_partition: int
    source_offset: int
    cause_at_ms: int | None = None
    cause_origin: str | None = None
    cause_ref: str | None = None
    release_at_ms: int | None = None  # held: when it goes out; expired: when it would have


@dataclass(frozen=True, slots=True)
class HeldMessage(_Record):
    """A message held for a number, as topic sms.held shows it (key: decision id; a
    tombstone once it is no longer held)."""

    decision_id: str
    event_id: str
    automation_id: str
    e164: str
    outcome: str  # HELD_WINDOW or DEFERRED_COOLDOWN
    trigger_at_ms: int
    release_at_ms: int
    deadline_ms: int
    priority: int


@dataclass(frozen=True, slots=True)
class SendRequest(_Record):
    """An SMS that passed the cooldown (topic sms.outbox)."""

    decision_id: str
    event_id: str
    automation_id: str
    e164: str
    text: str
    sender: str
    decided_at_ms: int


@dataclass(frozen=True, slots=True)
class OptOut(_Record):
    """A number opted out, or back in (topic sms.optouts)."""

    phone: str
    opted_out: bool
    at_ms: int
    channel: str
    country: str | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class Erasure(_Record):
    """A request to erase a number from every state the project keeps (sms.erasures)."""

    phone: str
    requested_at_ms: int
    requested_by: str
    country: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter(_Record):
    """A record that could not be processed, with the reason (topic sms.deadletter)."""

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    failed_at_ms: int

    @classmethod
    def of(cls, source: Source, reason: str, detail: str, now_ms: int) -> DeadLetter:
        return cls(reason, detail, source.topic, source.partition, source.offset,
                   source.key, source.value, now_ms)
