"""The demo: the whole pipeline on the embedded broker, with a day of realistic input.

`scenario` builds the input (automations, sends from another system, triggers) from a
seed; the integration tests replay the same scenario and check it against a model of
their own. `run_demo` starts a broker (unless KAFKA_BOOTSTRAP_SERVERS is given) and a
worker process, feeds the scenario, waits until every trigger is decided and prints
what happened.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from phonenumbers import is_valid_number, parse

from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.bundles import events_seen
from streams.kafka import Record, ensure_topics, iter_records, producer
from streams.processes import ConnectorProcess, FakeGatewayProcess, WorkerProcess
from streams.settings import Settings

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
OUTSIDE_SYSTEM = "newsletter-platform"


def demo_automations(now_ms: int) -> list[Automation]:
    return [
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
                   cooldown_enabled=True, cooldown_ms=2 * HOUR_MS, updated_at_ms=now_ms),
        Automation("spring-promo", "Spring promotion (ended)", country="DK",
                   event_type="spring_promo", message="Spring sale!", sender="Shop",
                   enabled=False, cooldown_enabled=True, cooldown_ms=DAY_MS,
                   updated_at_ms=now_ms),
    ]


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


def scenario(seed: int, n_triggers: int, n_numbers: int, end_ms: int) -> Scenario:
    """A day of input ending at `end_ms`: triggers keyed by customer id, numbers
    written in mixed formats, a few invalid numbers, unknown automations and garbage
    records, and sends from another system."""
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
    result = Scenario(demo_automations(start_ms), [], [])
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


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    out = producer(bootstrap)
    for key, value, timestamp in records:
        while True:
            try:
                out.produce(topic, key=key, value=value, timestamp=timestamp)
                break
            except BufferError:
                out.poll(0.1)
        out.poll(0)
    if out.flush(60) != 0:
        raise TimeoutError(f"records for {topic} were not acknowledged within 60 s")


def wait_for(bootstrap: str, topic: str, done: Callable[[list[Record]], bool],
             timeout_s: float) -> list[Record]:
    """Read `topic` from the start until `done(records)`; a timeout is an error."""
    records: list[Record] = []
    for record in iter_records(bootstrap, topic, follow=True, timeout_s=timeout_s):
        records.append(record)
        if done(records):
            return records
    raise TimeoutError(f"{topic}: gave up after {timeout_s} s with {len(records)} records")


def _ago(ms: int) -> str:
    minutes = ms // 60_000
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _print_summary(sc: Scenario, decisions: list[dict], dead: list[dict], outbox: int,
                   elapsed_s: float, tag: Callable[[str], str]) -> None:
    by_outcome = Counter(d["outcome"] for d in decisions)
    print(f"\nsms-cooldown demo: {len(sc.triggers)} triggers for {len(sc.e164_of)} customers "
          f"over one day, {len(sc.sends)} SMS sent by '{OUTSIDE_SYSTEM}', "
          f"{len(sc.automations)} automations")
    rows = [
        ("triggers read", len(sc.triggers)),
        ("passed, to sms.outbox", by_outcome.pop("passed", 0)),
        ("suppressed by cooldown", by_outcome.pop("suppressed_cooldown", 0)),
        ("dropped: outside the sending window", by_outcome.pop("outside_window", 0)),
        ("dropped: automation disabled", by_outcome.pop("automation_disabled", 0)),
        ("invalid number", by_outcome.pop("invalid_number", 0)),
        ("no automation for the event", by_outcome.pop("no_matching_automation", 0)),
        ("unknown automation", by_outcome.pop("unknown_automation", 0)),
        *((f"other: {k}", v) for k, v in sorted(by_outcome.items())),
        ("unreadable, to sms.deadletter", len(dead)),
    ]
    for label, count in rows:
        print(f"  {label:38} {count:6}")
    print(f"  {'send requests on sms.outbox':38} {outbox:6}")
    suppressed = [d for d in decisions if d["outcome"] == "suppressed_cooldown"]
    external = [d for d in suppressed if d["cause_origin"] == OUTSIDE_SYSTEM][:1]
    internal = [d for d in suppressed if d["cause_origin"] != OUTSIDE_SYSTEM][:1]
    for d in external + internal:
        print(f"  e.g. {d['event_id']} ({d['automation_id']}, number {tag(d['e164'])}) was "
              f"suppressed: an SMS from {d['cause_origin']} reached it "
              f"{_ago(d['decided_at_ms'] - d['cause_at_ms'])} earlier (ref {d['cause_ref']})")
    print(f"  {'decided and sent in':38} {elapsed_s:6.1f} s")


DEMO_GATEWAY_TOKEN = "demo-token"
# A gateway that misbehaves a little, so the demo shows retries and refusals.
DEMO_GATEWAY_FAULTS = {"p500": 0.02, "p429": 0.01, "p400": 0.003, "retry_after": 0.5}


def run_demo(triggers: int, numbers: int, seed: int) -> int:
    from contextlib import ExitStack

    from streams.broker import EmbeddedBroker

    settings = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="smscool-demo-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            broker = EmbeddedBroker(log=(work / "broker.log").open("wb")).start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap_servers
            print(f"embedded broker on {bootstrap}")
        ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        sc = scenario(seed, triggers, numbers, now_ms)
        for automation in sc.automations:
            publish_automation(bootstrap, automation)
        gateway = FakeGatewayProcess(work / "gateway.log", DEMO_GATEWAY_TOKEN,
                                     DEMO_GATEWAY_FAULTS, seed=seed).start()
        stack.callback(gateway.stop)
        print(f"{len(sc.automations)} automations on {topics.AUTOMATIONS}; fake SMS gateway on "
              f"{gateway.url}; starting a worker and the connector")
        worker = WorkerProcess(bootstrap, work / "data", work / "worker.log").start()
        stack.callback(worker.stop)
        connector = ConnectorProcess(
            bootstrap, gateway.url, DEMO_GATEWAY_TOKEN, work / "connector", work / "connector.log",
            {"SMSCOOL_CONNECTOR_RATE": "1000", "SMSCOOL_CONNECTOR_CONCURRENCY": "32"}).start()
        stack.callback(connector.stop)
        started = time.monotonic()
        try:
            # Sends from the other system go first and are waited for, so that every
            # trigger of the day is decided knowing them.
            produce(bootstrap, topics.SENT, sc.sends)
            wait_for(bootstrap, topics.BY_NUMBER, events_seen(len(sc.sends)), 60)
            produce(bootstrap, topics.TRIGGERS, sc.triggers)
            print(f"{len(sc.triggers)} triggers on {topics.TRIGGERS}; waiting for decisions")
            decided: dict[str, dict] = {}

            def collect_decision(records: list[Record]) -> bool:
                d = codecs.DECISION.decode(records[-1].value)
                decided.setdefault(d["event_id"], d)
                # Each readable trigger answers at most one automation here, so it
                # gets exactly one decision; the garbage ones go to the dead letters.
                return len(decided) + sc.garbage >= len(sc.triggers)

            wait_for(bootstrap, topics.DECISIONS, collect_decision, 120)
            passed = sum(d["outcome"] == "passed" for d in decided.values())
            print(f"every trigger decided; waiting for the gateway's answer to {passed} SMS")
            outcomes: dict[str, dict] = {}

            def collect_outcome(records: list[Record]) -> bool:
                o = codecs.DELIVERY_OUTCOME.decode(records[-1].value)
                outcomes[o["decision_id"]] = o
                return len(outcomes) >= passed

            wait_for(bootstrap, topics.DELIVERY, collect_outcome, 120)
            elapsed = time.monotonic() - started
            dead = [d for d in (codecs.DEAD_LETTER.decode(r.value) for r in iter_records(
                bootstrap, topics.DEADLETTER, idle_s=0.5, timeout_s=10))
                if d["source_topic"] == topics.TRIGGERS]
            outbox = len({codecs.SEND_REQUEST.decode(r.value)["decision_id"]
                          for r in iter_records(bootstrap, topics.OUTBOX, idle_s=0.5)})
            http_requests = len(_fake_records(gateway.url, "requests"))
            accepted = len(_fake_records(gateway.url, "accepted"))
        except TimeoutError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            for process in (worker, connector):
                print(f"--- {process.log_path.name}\n{process.log_tail()}", file=sys.stderr)
            return 1
        _print_summary(sc, list(decided.values()), dead, outbox, elapsed, settings.number_tag)
        refused = sum(o["outcome"] != "accepted" for o in outcomes.values())
        print(f"  {'SMS accepted by the fake gateway':38} {accepted:6}")
        print(f"  {'  HTTP requests (with retries)':38} {http_requests:6}")
        print(f"  {'  refused by the gateway, released':38} {refused:6}")
    return 0


def _fake_records(url: str, what: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/_fake/{what}", timeout=10) as answer:
        return json.loads(answer.read())
