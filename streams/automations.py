"""Automation definitions: the record, who it answers, and the catalog every worker keeps.

Definitions live in the compacted topic `sms.automations`, keyed by automation id.
Every worker reads all of it (no consumer group), so an update reaches the next
trigger without a restart.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, TypeVar

from streams import codecs
from streams.numbers import region_for_country
from streams.topics import AUTOMATIONS
from streams.window import ALWAYS, SendingWindow, parse_window, timezone_for_country

log = logging.getLogger(__name__)
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_duration_ms(text: str) -> int:
    """'24h', '30m', '90s', '7d', '1500ms' -> milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 24h, 30m, 90s, 7d)")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def format_duration(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _DURATION_MS[unit] == 0:
            return f"{ms // _DURATION_MS[unit]}{unit}"
    return f"{ms}ms"


# What an automation does with a trigger it may not send now.
HOLD, DROP, DEFER = "hold", "drop", "defer"
# Any window opens within a week: held that long, a message outside its window always
# gets its turn.
DEFAULT_MAX_HOLD_MS = 7 * 86_400_000


class MissingAttribute(KeyError):
    pass


class InvalidField(ValueError):
    """An automation's field that cannot be as given; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Automation:
    automation_id: str
    title: str
    country: str
    message: str
    sender: str
    event_type: str | None = None
    segment: str | None = None
    timezone: str | None = None
    window: str = "always"
    enabled: bool = True
    cooldown_enabled: bool = False
    cooldown_ms: int = 0
    failed_sends_count: bool = False
    updated_at_ms: int = 0
    outside_window: str = HOLD  # or DROP
    on_cooldown: str = DROP  # or DEFER
    max_hold_ms: int = DEFAULT_MAX_HOLD_MS
    priority: int = 0
    # Sent to numbers that opted out too: order confirmations, one-time codes.
    transactional: bool = False

    def __post_init__(self) -> None:
        if self.outside_window not in (HOLD, DROP):
            raise InvalidField("outside_window", f"outside_window is '{HOLD}' or '{DROP}', "
                                                 f"not {self.outside_window!r}")
        if self.on_cooldown not in (DROP, DEFER):
            raise InvalidField("on_cooldown", f"on_cooldown is '{DROP}' or '{DEFER}', "
                                              f"not {self.on_cooldown!r}")
        if self.max_hold_ms <= 0:
            raise InvalidField("max_hold_ms", "the maximum hold must be greater than zero")
        if not -1_000_000 <= self.priority <= 1_000_000:
            raise InvalidField("priority", "a priority lies between -1000000 and 1000000")
        if not self.automation_id.strip():
            raise InvalidField("automation_id", "an automation needs an id")
        if len(self.automation_id.encode()) > 100:
            raise InvalidField("automation_id", "an automation id has at most 100 bytes")
        try:
            region_for_country(self.country)
        except ValueError as exc:
            raise InvalidField("country", str(exc)) from None
        if self.cooldown_enabled and self.cooldown_ms <= 0:
            raise InvalidField("cooldown_ms", "cooldown needs an interval greater than zero")
        try:
            zone = self.zone
        except ValueError as exc:  # a country with several zones, and none given
            raise InvalidField("timezone", str(exc)) from None
        try:
            parse_window(ALWAYS, zone)
        except ValueError as exc:
            raise InvalidField("timezone", str(exc)) from None
        try:
            self.sending_window()
        except ValueError as exc:
            raise InvalidField("window", str(exc)) from None

    @property
    def region(self) -> str:
        return region_for_country(self.country)

    @property
    def zone(self) -> str:
        if self.timezone:
            return self.timezone
        # An always-open window needs no zone; countries with several need one given.
        return "UTC" if self.window == ALWAYS else timezone_for_country(self.region)

    def sending_window(self) -> SendingWindow:
        return parse_window(self.window, self.zone)

    def answers(self, trigger: dict[str, Any]) -> bool:
        """Does this automation answer a trigger that names no automation?"""
        if self.event_type is None or trigger.get("event_type") != self.event_type:
            return False
        return self.segment is None or trigger.get("segment") == self.segment

    def render(self, attributes: dict[str, str]) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in attributes:
                raise MissingAttribute(name)
            return attributes[name]

        return _PLACEHOLDER.sub(substitute, self.message)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Automation:
        return cls(**record)

    def encode(self) -> bytes:
        return codecs.AUTOMATION.encode(self.to_record())

    @classmethod
    def decode(cls, data: bytes) -> Automation:
        return cls.from_record(codecs.AUTOMATION.decode(data))

    def updated(self, **changes: Any) -> Automation:
        return replace(self, **changes)


class UnknownAutomation(LookupError):
    pass


class Catalog:
    """The automations a worker knows, by id. Disabled ones are kept: a trigger that
    names one gets the decision `automation_disabled`, not `unknown_automation`."""

    def __init__(self, automations: Iterable[Automation] = ()) -> None:
        self._by_id: dict[str, Automation] = {a.automation_id: a for a in automations}
        self._sorted: list[Automation] | None = None  # `all()`, asked for every trigger

    def __len__(self) -> int:
        return len(self._by_id)

    def put(self, automation: Automation) -> None:
        self._by_id[automation.automation_id] = automation
        self._sorted = None

    def remove(self, automation_id: str) -> None:
        self._by_id.pop(automation_id, None)
        self._sorted = None

    def get(self, automation_id: str) -> Automation | None:
        return self._by_id.get(automation_id)

    def all(self) -> list[Automation]:
        return list(self._ordered())

    def _ordered(self) -> list[Automation]:
        if self._sorted is None:
            self._sorted = sorted(self._by_id.values(), key=lambda a: a.automation_id)
        return self._sorted

    def for_trigger(self, trigger: dict[str, Any]) -> list[Automation]:
        """The automations a trigger is for. Raises UnknownAutomation when it names an
        id nobody defined."""
        named = trigger.get("automation_id")
        if named is not None:
            automation = self._by_id.get(named)
            if automation is None:
                raise UnknownAutomation(named)
            return [automation]
        return [a for a in self._ordered() if a.answers(trigger)]

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of sms.automations: a definition, or a tombstone that deletes."""
        if value is None:
            if key is not None:
                self.remove(key.decode("utf-8", "replace"))
            return
        try:
            automation = Automation.decode(value)
        except (codecs.CodecError, ValueError, TypeError) as exc:
            # A bad definition must not stop the worker; the previous one stays.
            log.error("ignoring an invalid automation definition (key %r): %s", key, exc)
            return
        self.put(automation)


def longest_cooldown_ms(catalog: Catalog) -> int:
    """The longest cooldown of any automation (enabled or not); 0 without any."""
    return max((a.cooldown_ms for a in catalog.all() if a.cooldown_enabled), default=0)


class CatalogFollower:
    """Keeps a Catalog in step with sms.automations, read from the beginning outside
    any consumer group. `load` returns once the topic has been read up to where it
    ended when it was called; `poll` applies whatever came since, without waiting."""

    def __init__(self, catalog: Catalog, bootstrap: str) -> None:
        from confluent_kafka import Consumer

        from streams.kafka import librdkafka_log

        self.catalog = catalog
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "logger": librdkafka_log,
            "group.id": "smscool-catalog",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        })

    def load(self, timeout_s: float = 120.0) -> None:
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + timeout_s
        partitions = self._partitions(deadline)
        self._consumer.assign([TopicPartition(AUTOMATIONS, p, 0) for p in partitions])

        def end_of(partition: int) -> int:
            return int(self._consumer.get_watermark_offsets(
                TopicPartition(AUTOMATIONS, partition), timeout=10, cached=False)[1])

        ends = {p: _until_answered(partial(end_of, p), deadline) for p in partitions}
        positions = dict.fromkeys(partitions, 0)
        while True:
            read = self._apply(self._consumer.consume(1000, timeout=0.2), positions)
            # Some brokers undercount the end after multi-record batches: also wait
            # for an empty fetch before calling the catalog loaded.
            if not read and all(positions[p] >= ends[p] for p in partitions):
                log.info("automation catalog loaded: %d automations", len(self.catalog))
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{AUTOMATIONS} not read to its end in {timeout_s} s")

    def poll(self) -> None:
        self._apply(self._consumer.consume(1000, timeout=0), None)

    def close(self) -> None:
        self._consumer.close()

    def _partitions(self, deadline: float) -> list[int]:
        while True:
            topic = _until_answered(lambda: self._consumer.list_topics(
                AUTOMATIONS, timeout=10), deadline).topics.get(AUTOMATIONS)
            if topic is not None and topic.partitions and topic.error is None:
                return sorted(topic.partitions)
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {AUTOMATIONS} does not exist")
            time.sleep(0.5)

    def _apply(self, messages: list[Any], positions: dict[int, int] | None) -> int:
        read = 0
        for message in messages:
            if message.error():
                continue
            self.catalog.apply(message.key(), message.value())
            read += 1
            if positions is not None:
                positions[message.partition()] = message.offset() + 1
        return read


def _until_answered(ask: Callable[[], T], deadline: float) -> T:
    """`ask()`, asked again while Kafka does not answer (a broker restarting), until
    `deadline`."""
    from confluent_kafka import KafkaException

    while True:
        try:
            return ask()
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("automation catalog: Kafka did not answer (%s); asking again", exc)
            time.sleep(1.0)


def read_catalog(bootstrap: str) -> Catalog:
    """The automations as sms.automations holds them now (for the command line)."""
    from streams.kafka import read_records

    catalog = Catalog()
    for record in read_records(bootstrap, AUTOMATIONS, idle_s=1.0):
        catalog.apply(record.key, record.value)
    return catalog


def publish_automation(bootstrap: str, automation: Automation) -> None:
    from streams.kafka import produce_all, producer

    # librdkafka gives the record up after the same 30 s that produce_all waits.
    out = producer(bootstrap, **{"message.timeout.ms": 30_000})
    produce_all(out, AUTOMATIONS, [(automation.automation_id.encode(), automation.encode())],
                timeout_s=35)
