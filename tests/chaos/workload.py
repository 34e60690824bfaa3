"""The harness's input: automations with short intervals, Danish numbers drawn with a
Zipf skew, triggers in rounds, outside sends, and duplicates of earlier triggers.

Time is the wall clock, compressed: the cooldowns are tens of seconds rather than hours,
so that a run of minutes holds many intervals per number. Two automations hold what they
may not send now: one defers past its cooldown, one has a sending window of one minute
that opens shortly after the run starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bench.workload import danish_numbers, written, zipf_cum_weights
from streams import codecs
from streams.automations import Automation

OUTSIDE_SYSTEM = "crm-campaigns"

# Longer than any stall the faults cause (a worker's failover is under ~15 s), so that a
# number's events that were queued during a stall still fall in the same interval.
BASE_AUTOMATIONS = [
    Automation("chaos-45s", "45 s cooldown", country="DK", event_type="short",
               message="Short {n}", sender="Chaos", cooldown_enabled=True, cooldown_ms=45_000),
    Automation("chaos-90s", "90 s cooldown", country="DK", event_type="medium",
               message="Medium {n}", sender="Chaos", cooldown_enabled=True, cooldown_ms=90_000),
    Automation("chaos-180s", "180 s cooldown", country="+45", event_type="long",
               message="Long {n}", sender="Chaos", cooldown_enabled=True, cooldown_ms=180_000),
    Automation("chaos-nocooldown", "no cooldown", country="DK", event_type="service",
               message="Service {n}", sender="Chaos"),
]
# Deferred rather than dropped; a number hit often collapses and re-defers its held
# messages until some pass their deadline.
DEFERRING = Automation(
    "chaos-defer", "60 s cooldown, deferred", country="DK", event_type="deferred",
    message="Deferred {n}", sender="Chaos", cooldown_enabled=True, cooldown_ms=60_000,
    on_cooldown="defer", max_hold_ms=120_000, priority=5)
WINDOW_MS = 60_000
# Held up to this long for the window: a trigger earlier than that before the opening,
# or any after the window closed (the next opening is a day away), expires at once.
WINDOW_MAX_HOLD_MS = 30_000
_EVENT_TYPES = [("short", 40), ("medium", 25), ("long", 15), ("service", 20),
                ("deferred", 8), ("windowed", 7)]
_ZONE = ZoneInfo("Europe/Copenhagen")  # Danish numbers: where their windows count


def window_opening_ms(start_ms: int) -> int:
    """The first whole minute at least 30 s after the run's start: the feed has begun."""
    return (start_ms + 30_000 + 59_999) // 60_000 * 60_000


def automations(start_ms: int) -> list[Automation]:
    """The run's automations; the windowed one's window opens at
    `window_opening_ms(start_ms)` in Copenhagen time, daily."""
    opening = datetime.fromtimestamp(window_opening_ms(start_ms) / 1000, _ZONE)
    closing = datetime.fromtimestamp((window_opening_ms(start_ms) + WINDOW_MS) / 1000, _ZONE)
    end = "24:00" if closing.hour == closing.minute == 0 else f"{closing:%H:%M}"
    windowed = Automation(
        "chaos-window", "30 s cooldown, one minute a day", country="DK",
        event_type="windowed", message="Windowed {n}", sender="Chaos",
        window=f"daily {opening:%H:%M}-{end}", cooldown_enabled=True, cooldown_ms=30_000,
        max_hold_ms=WINDOW_MAX_HOLD_MS)
    return [*BASE_AUTOMATIONS, DEFERRING, windowed]


@dataclass
class Round:
    sends: list[tuple[bytes, bytes]] = field(default_factory=list)      # key, Sent
    triggers: list[tuple[bytes, bytes]] = field(default_factory=list)   # key, Trigger
    # Earlier triggers sent again, with their first Kafka timestamp: a producer's retry.
    duplicates: list[tuple[bytes, bytes, int]] = field(default_factory=list)


class Workload:
    def __init__(self, seed: int, numbers: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.numbers = danish_numbers(self.rng, numbers)  # E.164
        self.cum_weights = zipf_cum_weights(numbers, exponent=1.0)
        self.triggers_made = 0
        self.sends_made = 0
        self.sent_triggers: list[tuple[bytes, bytes, int]] = []  # for duplicates

    def _number(self) -> tuple[int, str]:
        index = self.rng.choices(range(len(self.numbers)), cum_weights=self.cum_weights)[0]
        return index, self.numbers[index]

    def round(self, triggers: int, now_ms: int) -> Round:
        result = Round()
        for _ in range(self.rng.choices([0, 1, 2], [60, 30, 10])[0] * max(1, triggers // 50)):
            _, e164 = self._number()
            self.sends_made += 1
            result.sends.append((e164.encode(), codecs.SENT.encode({
                "phone": written(e164, self.rng), "country": "DK", "sent_at_ms": now_ms,
                "origin": OUTSIDE_SYSTEM, "decision_id": None,
                "message_id": f"crm-{self.seed}-{self.sends_made}"})))
        for _ in range(triggers):
            index, e164 = self._number()
            self.triggers_made += 1
            event_type = self.rng.choices(*zip(*_EVENT_TYPES, strict=True))[0]
            value = codecs.TRIGGER.encode({
                "event_id": f"chaos-{self.seed}-{self.triggers_made:07d}",
                "automation_id": None, "event_type": event_type, "segment": None,
                "phone": written(e164, self.rng), "occurred_at_ms": now_ms,
                "attributes": {"n": str(index)}})
            # Keyed by customer, not by number: the pipeline must re-key.
            result.triggers.append((f"customer-{index}".encode(), value))
        if self.sent_triggers:
            for _ in range(max(1, triggers // 100)):
                result.duplicates.append(self.rng.choice(self.sent_triggers))
        return result

    def remember(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.sent_triggers.append((key, value, timestamp_ms))
        if len(self.sent_triggers) > 5000:
            del self.sent_triggers[:1000]
