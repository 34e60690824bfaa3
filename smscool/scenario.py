"""The demo's input: a day of realistic traffic built from a seed.

`scenario` makes the automations, the sends from another system and the triggers (keyed
by customer id, numbers written the ways people write them, some invalid, some for
unknown automations, a few unreadable records). The demo feeds it; the integration tests
feed the same scenario and check the pipeline against a model of their own.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from phonenumbers import is_valid_number, parse

from streams import codecs
from streams.automations import Automation

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
OUTSIDE_SYSTEM = "newsletter-platform"


def demo_automations(now_ms: int, holding: bool = True) -> list[Automation]:
    """The demo's automations. With `holding`, a trigger outside a window is held
    until it opens (the default) and back-in-stock defers a trigger inside its cooldown
    for up to 6 h; without, both are dropped, as automations could do before holds."""
    automations = [
        Automation("cart-reminder", "Abandoned cart, 1st reminder", country="DK",
                   event_type="cart_abandoned", window="daily 08:00-21:00",
                   message="Hi {name}, your basket is waiting for you.", sender="Shop",
                   cooldown_enabled=True, cooldown_ms=24 * HOUR_MS, updated_at_ms=now_ms),
        Automation("appointment-reminder", "Appointment tomorrow (service)", country="+45",
                   event_type="appointment_tomorrow", window="always",
                   message="Reminder: your appointment is tomorrow at {time}.", sender="Clinic",
                   updated_at_ms=now_ms),
        Automation("winback-vip", "Win-back, VIP segment only", country="DK",
                   event_type="winback", segment="vip", window="mon-fri 09:00-17:00",
                   message="We miss you, {name}: 20% off this week.", sender="Shop",
                   cooldown_enabled=True, cooldown_ms=6 * HOUR_MS, updated_at_ms=now_ms),
        Automation("back-in-stock", "Back in stock", country="DK",
                   event_type="back_in_stock", timezone="Europe/Copenhagen", window="always",
                   message="{product} is back in stock.", sender="Shop",
                   cooldown_enabled=True, cooldown_ms=2 * HOUR_MS, on_cooldown="defer",
                   max_hold_ms=6 * HOUR_MS, priority=1, updated_at_ms=now_ms),
        Automation("spring-promo", "Spring promotion (ended)", country="DK",
                   event_type="spring_promo", message="Spring sale!", sender="Shop",
                   enabled=False, cooldown_enabled=True, cooldown_ms=DAY_MS,
                   updated_at_ms=now_ms),
    ]
    if holding:
        return automations
    return [a.updated(outside_window="drop", on_cooldown="drop") for a in automations]


# Event types with their weights, and the attributes their messages need.
_EVENTS = [
    ("cart_abandoned", 40), ("appointment_tomorrow", 15), ("winback", 15),
    ("back_in_stock", 20), ("spring_promo", 5), ("price_drop", 5),
]
_INVALID_PHONES = ["+45 12 34", "12345", "+1 412 535 abcd", "call me", "", "+45 1234 5678 9999"]


def _written(national: str, rng: random.Random) -> str:
    """One Danish number written in one of the ways people write it."""
    n = national
    return rng.choice([
        f"+45{n}", f"+45 {n[:2]} {n[2:4]} {n[4:6]} {n[6:]}", f"0045{n}", n,
        f"{n[:2]} {n[2:4]} {n[4:6]} {n[6:]}", f"+45-{n[:4]}-{n[4:]}", f"(+45) {n}",
    ])


@dataclass
class Scenario:
    automations: list[Automation]
    sends: list[tuple[bytes, bytes, int]]        # key, value, Kafka timestamp
    triggers: list[tuple[bytes, bytes, int]]
    event_ids: list[str] = field(default_factory=list)  # of each trigger, in order
    garbage: int = 0
    e164_of: dict[str, str] = field(default_factory=dict)  # customer id -> E.164
    end_ms: int = 0  # when the day ends


def scenario(seed: int, n_triggers: int, n_numbers: int, end_ms: int,
             holding: bool = True) -> Scenario:
    """A day of input ending at `end_ms`: triggers keyed by customer id, numbers
    written in mixed formats, a few invalid numbers, unknown automations and garbage
    records, and sends from another system. `holding`: see `demo_automations`."""
    rng = random.Random(seed)
    start_ms = end_ms - DAY_MS
    nationals: list[str] = []
    while len(nationals) < n_numbers:
        candidate = f"{rng.choice('2345'):s}{rng.randrange(10**7):07d}"
        # Not every block of the Danish plan is in use; the demo's customers have real ones.
        if candidate not in nationals and is_valid_number(parse("+45" + candidate)):
            nationals.append(candidate)
    customers = [f"customer-{i:05d}" for i in range(n_numbers)]
    # Some customers are far more active than others.
    weights = [1 / (rank + 1) ** 0.8 for rank in range(n_numbers)]
    result = Scenario(demo_automations(start_ms, holding), [], [], end_ms=end_ms)
    result.e164_of = {c: f"+45{n}" for c, n in zip(customers, nationals, strict=False)}

    for i in range(max(1, n_numbers // 8)):
        customer = rng.choice(customers)
        # The other system's sends all predate the triggers: the demo feeds them first.
        at = rng.randrange(start_ms - DAY_MS, start_ms)
        sent = {"phone": result.e164_of[customer], "country": None, "sent_at_ms": at,
                "origin": OUTSIDE_SYSTEM, "decision_id": None, "message_id": f"nl-{seed}-{i}"}
        result.sends.append((customer.encode(), codecs.SENT.encode(sent), at))
    result.sends.sort(key=lambda s: s[2])

    times = sorted(rng.randrange(start_ms, end_ms) for _ in range(n_triggers))
    events, event_weights = zip(*_EVENTS, strict=False)
    for i, at in enumerate(times):
        idx = rng.choices(range(n_numbers), weights)[0]
        customer, national = customers[idx], nationals[idx]
        event_type = rng.choices(events, event_weights)[0]
        trigger = {
            "event_id": f"evt-{seed}-{i:06d}",
            "automation_id": None,
            "event_type": event_type,
            "segment": rng.choice(["vip", "regular", None]),
            "phone": _written(national, rng),
            "occurred_at_ms": at - rng.randrange(0, 2000),
            "attributes": {"name": f"Kunde {idx}", "time": "10:30", "product": "Rain jacket"},
        }
        roll = rng.random()
        if roll < 0.01:
            trigger["phone"] = rng.choice(_INVALID_PHONES)
        elif roll < 0.015:
            trigger["automation_id"] = "ghost-automation"
        elif roll < 0.02:
            trigger["automation_id"] = "cart-reminder"
            trigger["event_type"] = None
        if roll > 0.999:
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            result.garbage += 1
        elif rng.random() < 0.2:
            value = json.dumps(trigger).encode()
        else:
            value = codecs.TRIGGER.encode(trigger)
        result.triggers.append((customer.encode(), value, at))
        result.event_ids.append(trigger["event_id"])
    return result
