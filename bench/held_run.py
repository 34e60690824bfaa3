"""The held run: what a million held messages cost a worker, and how late releases are
while it holds them.

    python -m bench.held_run                    # a million held, 20,000 releases measured
    python -m bench.held_run --held 100000 --measured 5000 --triggers 50000

One worker (`smscool worker`, RocksDB store) on the embedded broker (or on
KAFKA_BOOTSTRAP_SERVERS), in four phases, each waited for before the next:

1. throughput before: `--triggers` triggers of an always-open automation with a 24 h
   cooldown, each for a new number (all pass); triggers/s from the first produced to
   the last decision read.
2. hold: `--held` triggers, each for a new number, of an automation whose window
   opens once a week, three days from now: every one is held (`held_window`);
   held/s as in phase 1, and the worker's RSS (with its ingest child) before and after.
3. releases under load: `--measured` new numbers each get an outside SMS, then a
   trigger of an automation that defers inside its 2-minute cooldown, with the sends
   spaced so that the releases fall evenly over `--spread-s` seconds. A release's
   lateness is the Kafka timestamp of its `released` decision (the worker's producer
   stamps it when the worker decides) minus the release time it was held for.
4. throughput after: as phase 1, on new numbers, with the million still held.

The numbers are computed (`bench.workload.UniqueNumbers`), not stored; decisions are
counted as they come, decoded only in phase 3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer

from bench.contenders import tree_rss
from bench.workload import UniqueNumbers, produce_records
from smscool.processes import WorkerProcess
from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.bundles import events_seen
from streams.kafka import ensure_topics, wait_for
from streams.settings import Settings
from streams.window import DAY_NAMES

HOUR_MS = 3_600_000
COOLDOWN_MS = 120_000
# Time for the sends and triggers of phase 3 to be read before the first release.
RELEASE_LEAD_S = 60.0


def automations(now_ms: int) -> list[Automation]:
    opens = datetime.fromtimestamp(now_ms / 1000, ZoneInfo("Europe/Copenhagen")) \
        + timedelta(days=3)
    return [
        Automation("bench-pass", "Always open, 24 h cooldown", country="DK",
                   event_type="pass", message="Hi", sender="Bench", cooldown_enabled=True,
                   cooldown_ms=24 * HOUR_MS, updated_at_ms=now_ms),
        Automation("bench-weekly", "Opens once a week", country="DK", event_type="weekly",
                   window=f"{DAY_NAMES[opens.weekday()]} 03:00-03:01",
                   timezone="Europe/Copenhagen", message="Hi", sender="Bench",
                   updated_at_ms=now_ms),
        Automation("bench-defer", "Deferred inside its cooldown", country="DK",
                   event_type="defer", message="Hi", sender="Bench", cooldown_enabled=True,
                   cooldown_ms=COOLDOWN_MS, on_cooldown="defer", max_hold_ms=HOUR_MS,
                   updated_at_ms=now_ms),
    ]


def trigger(event_id: str, e164: str, event_type: str, at_ms: int) -> tuple:
    return (e164.encode(), codecs.TRIGGER.encode({
        "event_id": event_id, "automation_id": None, "event_type": event_type,
        "segment": None, "phone": e164, "occurred_at_ms": at_ms, "attributes": {}}), at_ms)


class Decisions:
    """sms.decisions as it grows, read outside any group."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "held-run",
                                  "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest",
                                  "fetch.wait.max.ms": 50})
        self.consumer.subscribe([topics.DECISIONS])
        self.count = 0

    def wait(self, wanted: int, timeout_s: float, label: str,
             on_record: object = None) -> float:
        """Read until `wanted` more records came; the monotonic time of the last."""
        deadline = time.monotonic() + timeout_s
        target = self.count + wanted
        last_report = time.monotonic()
        while self.count < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {target - self.count} decisions missing")
            for message in self.consumer.consume(10_000, timeout=0.5):
                if message.error():
                    continue
                self.count += 1
                if callable(on_record):
                    on_record(message)
            if time.monotonic() - last_report > 10:
                print(f"  {label}: {wanted - (target - self.count):,} of {wanted:,}",
                      flush=True)
                last_report = time.monotonic()
        return time.monotonic()


def percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(args: argparse.Namespace) -> dict:
    settings = Settings.from_env()
    total = 1 + 2 * args.triggers + args.held + args.measured
    numbers = UniqueNumbers(total, seed=args.seed)
    ranges = iter(range(0, total))

    def take(count: int) -> list[int]:
        return [next(ranges) for _ in range(count)]

    result: dict = {"held": args.held, "measured": args.measured,
                    "triggers": args.triggers, "spread_s": args.spread_s}
    work = Path(tempfile.mkdtemp(prefix="smscool-held-run-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            from streams.broker import EmbeddedBroker

            broker = EmbeddedBroker(log=(work / "broker.log").open("wb"))
            stack.callback(broker.stop)
            bootstrap = broker.start().bootstrap_servers
        ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
        now = int(datetime.now(UTC).timestamp() * 1000)
        for automation in automations(now):
            publish_automation(bootstrap, automation)
        worker = WorkerProcess(bootstrap, work / "data", work / "worker.log")
        stack.callback(worker.stop)
        worker.start()
        decisions = Decisions(bootstrap)
        # A first trigger, decided, says the worker is ready.
        produce_records(bootstrap, topics.TRIGGERS, [trigger("ready", numbers[take(1)[0]],
                                                              "pass", now)])
        decisions.wait(1, 180, "worker start")

        def throughput(label: str) -> float:
            indices = take(args.triggers)
            started = time.monotonic()
            stamp = int(time.time() * 1000)
            produce_records(bootstrap, topics.TRIGGERS, (
                trigger(f"{label}-{i}", numbers[i], "pass", stamp) for i in indices))
            ended = decisions.wait(args.triggers, 1800, label)
            rate = args.triggers / (ended - started)
            print(f"{label}: {args.triggers:,} triggers decided at {rate:,.0f}/s", flush=True)
            return rate

        result["triggers_per_s_before"] = throughput("before")

        rss_before = tree_rss(worker.process.pid)
        started = time.monotonic()
        stamp = int(time.time() * 1000)
        produce_records(bootstrap, topics.TRIGGERS, (
            trigger(f"hold-{i}", numbers[i], "weekly", stamp) for i in take(args.held)))
        ended = decisions.wait(args.held, 3600, "hold")
        result["held_per_s"] = args.held / (ended - started)
        result["rss_before_bytes"] = rss_before
        result["rss_holding_bytes"] = tree_rss(worker.process.pid)
        print(f"hold: {args.held:,} messages held at {result['held_per_s']:,.0f}/s; worker "
              f"RSS {rss_before / 1e6:.0f} MB -> {result['rss_holding_bytes'] / 1e6:.0f} MB",
              flush=True)

        # Releases at now + lead + spread * k / measured.
        indices = take(args.measured)
        first_release = int(time.time() * 1000 + RELEASE_LEAD_S * 1000)
        step = args.spread_s * 1000 / args.measured
        sends = []
        for k, i in enumerate(indices):
            at = first_release + round(k * step) - COOLDOWN_MS
            sends.append((numbers[i].encode(), codecs.SENT.encode({
                "phone": numbers[i], "country": None, "sent_at_ms": at, "origin": "crm",
                "decision_id": None, "message_id": f"m-{i}"}), at))
        produce_records(bootstrap, topics.SENT, sends)
        # The sends must be in each number's state before its trigger.
        wait_for(bootstrap, topics.BY_NUMBER, events_seen(args.measured, "sent"), 600)
        stamp = int(time.time() * 1000)
        if stamp >= first_release:
            raise RuntimeError("phase 3 took longer than its lead: raise RELEASE_LEAD_S")
        produce_records(bootstrap, topics.TRIGGERS, (
            trigger(f"defer-{i}", numbers[i], "defer", stamp) for i in indices))
        lateness: list[int] = []
        outcomes: Counter[str] = Counter()

        def released(message: object) -> None:
            d = codecs.DECISION.decode(message.value())  # type: ignore[attr-defined]
            outcomes[d["outcome"]] += 1
            if d["outcome"] == "released":
                lateness.append(message.timestamp()[1] - d["decided_at_ms"])  # type: ignore[attr-defined]

        decisions.wait(2 * args.measured, RELEASE_LEAD_S + args.spread_s + 600,
                       "releases", released)
        if outcomes != Counter(deferred_cooldown=args.measured, released=args.measured):
            raise RuntimeError(f"phase 3 decided {dict(outcomes)}")
        result["release_lateness_ms"] = {
            "p50": percentile(lateness, 50), "p99": percentile(lateness, 99),
            "max": max(lateness), "min": min(lateness)}
        print(f"releases: {len(lateness):,} released while {args.held:,} held; lateness "
              f"p50 {result['release_lateness_ms']['p50']} ms, p99 "
              f"{result['release_lateness_ms']['p99']} ms, max "
              f"{result['release_lateness_ms']['max']} ms", flush=True)

        result["triggers_per_s_after"] = throughput("after")
        decisions.consumer.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.held_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held", type=int, default=1_000_000)
    p.add_argument("--measured", type=int, default=20_000)
    p.add_argument("--spread-s", dest="spread_s", type=float, default=60.0)
    p.add_argument("--triggers", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
