"""The demo: the whole pipeline on the embedded broker, with a day of realistic input.

`run_demo` starts a broker (unless KAFKA_BOOTSTRAP_SERVERS is given), a worker, the
gateway connector and a fake SMS gateway, feeds the scenario of `smscool.scenario`,
waits until every trigger is decided and every passed SMS answered, prints what
happened and stops them all — also when Ctrl-C or SIGTERM cuts it short.

The day ends at 07:50 in Copenhagen, and the worker's clock runs 40 times as fast
from there: the night's triggers for windowed automations are held, and go out when
the 08:00 window opens during the run, as do deferred ones whose cooldown ends by the
end of the run (08:15 on that clock).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from zoneinfo import ZoneInfo

from smscool.processes import (
    ConnectorProcess,
    FakeGatewayProcess,
    ServiceProcess,
    Stopped,
    WorkerProcess,
    stop_on_signals,
)
from smscool.scenario import OUTSIDE_SYSTEM, Scenario, scenario
from streams import codecs, topics
from streams.automations import publish_automation
from streams.bundles import events_seen
from streams.clock import Clock
from streams.held import read_held
from streams.kafka import (
    NotDelivered,
    Record,
    ensure_topics,
    iter_records,
    produce_all,
    producer,
    wait_for,
)
from streams.records import OPT_OUT_EVENT
from streams.settings import Settings


def _ago(ms: int) -> str:
    minutes = ms // 60_000
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, DEMO_ZONE).strftime("%a %H:%M")


def _print_summary(sc: Scenario, decided: dict[str, list[dict]], dead: list[dict],
                   still_held: int, outbox: int, elapsed_s: float,
                   tag: Callable[[str], str]) -> None:
    first = [records[0] for records in decided.values()]
    by_outcome = Counter(d["outcome"] for d in first)
    later = Counter(d["outcome"] for records in decided.values() for d in records[1:])
    print(f"\nsms-cooldown demo: {len(sc.triggers)} triggers for {len(sc.e164_of)} customers "
          f"over one day, {len(sc.sends)} SMS sent by '{OUTSIDE_SYSTEM}', "
          f"{len(sc.automations)} automations")
    rows = [
        ("triggers read", len(sc.triggers)),
        ("passed, to sms.outbox", by_outcome.pop("passed", 0)),
        ("suppressed by cooldown", by_outcome.pop("suppressed_cooldown", 0)),
        ("held: outside the sending window", by_outcome.pop("held_window", 0)),
        ("held: deferred by cooldown", by_outcome.pop("deferred_cooldown", 0)),
        ("expired: could not go out in time", by_outcome.pop("expired", 0)),
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
    print(f"  of the held, by {_clock(sc_end_of_run(sc))} on the worker's clock:")
    for label, count in [
        ("released, to sms.outbox", later.pop("released", 0)),
        ("collapsed: another went out at once", later.pop("collapsed", 0)),
        ("deferred again", later.pop("deferred_cooldown", 0)),
        ("suppressed at the release", later.pop("suppressed_cooldown", 0)),
        ("expired", later.pop("expired", 0)),
        *((f"other: {k}", v) for k, v in sorted(later.items()) if k != "held_window"),
        ("still held (sms.held)", still_held),
    ]:
        print(f"    {label:36} {count:6}")
    print(f"  {'send requests on sms.outbox':38} {outbox:6}")
    suppressed = [d for d in first if d["outcome"] == "suppressed_cooldown"]
    external = [d for d in suppressed if d["cause_origin"] == OUTSIDE_SYSTEM][:1]
    internal = [d for d in suppressed if d["cause_origin"] != OUTSIDE_SYSTEM][:1]
    for d in external + internal:
        print(f"  e.g. {d['event_id']} ({d['automation_id']}, number {tag(d['e164'])}) was "
              f"suppressed: an SMS from {d['cause_origin']} reached it "
              f"{_ago(d['decided_at_ms'] - d['cause_at_ms'])} earlier (ref {d['cause_ref']})")
    for wanted in ("held_window", "deferred_cooldown"):
        for records in decided.values():
            if records[0]["outcome"] == wanted and records[-1]["outcome"] == "released" \
                    and records[-1]["decided_at_ms"] >= sc.end_ms:
                d, out = records[0], records[-1]
                print(f"  e.g. {d['event_id']} ({d['automation_id']}, number {tag(d['e164'])}) "
                      f"was {wanted.replace('_', ' by ')} at {_clock(d['decided_at_ms'])} "
                      f"and went out at {_clock(out['decided_at_ms'])}")
                break
    print(f"  {'decided and sent in':38} {elapsed_s:6.1f} s")


# The simulated day ends shortly before a window opens, and the worker's clock runs
# fast from there, so that holds are released during the run.
DEMO_ZONE = ZoneInfo("Europe/Copenhagen")
DAY_ENDS_AT = wall_time(7, 50)
CLOCK_SPEED = 40.0  # 40 minutes a minute
RUN_FOR_MS = 25 * 60_000  # on the worker's clock: until 08:15


def day_end_ms(now_ms: int) -> int:
    """The next 07:50 in Copenhagen after `now_ms`."""
    now = datetime.fromtimestamp(now_ms / 1000, DEMO_ZONE)
    end = datetime.combine(now.date(), DAY_ENDS_AT, DEMO_ZONE)
    if end <= now:
        end = datetime.combine(now.date() + timedelta(days=1), DAY_ENDS_AT, DEMO_ZONE)
    return int(end.timestamp() * 1000)


def sc_end_of_run(sc: Scenario) -> int:
    return sc.end_ms + RUN_FOR_MS


DEMO_GATEWAY_TOKEN = "demo-token"
DEMO_WEB_PORT = 8080
# A gateway that misbehaves a little, so the demo shows retries and refusals.
DEMO_GATEWAY_FAULTS = {"p500": 0.02, "p429": 0.01, "p400": 0.003, "retry_after": 0.5}


def run_demo(triggers: int, numbers: int, seed: int, serve: bool = False) -> int:
    try:
        # Ctrl-C and SIGTERM alike: everything the demo started is stopped on the way out.
        with stop_on_signals():
            return _run(triggers, numbers, seed, serve)
    except Stopped as exc:
        print(f"demo stopped by {exc}; the processes it started are stopped", file=sys.stderr)
        return 128 + exc.signum


def _web_port() -> int:
    """8080 for the page when it is free (a URL to remember), else any free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEMO_WEB_PORT))
        except OSError:
            return 0
    return DEMO_WEB_PORT


def _run(triggers: int, numbers: int, seed: int, serve: bool) -> int:
    from contextlib import ExitStack

    from streams.broker import EmbeddedBroker

    settings = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="smscool-demo-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            # Each stop is registered before its start, which a signal may interrupt.
            broker = EmbeddedBroker(log=(work / "broker.log").open("wb"))
            stack.callback(broker.stop)
            broker.start()
            bootstrap = broker.bootstrap_servers
            print(f"embedded broker on {bootstrap}")
        ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
        end_ms = day_end_ms(int(datetime.now(UTC).timestamp() * 1000))
        sc = scenario(seed, triggers, numbers, end_ms)
        for automation in sc.automations:
            publish_automation(bootstrap, automation)
        gateway = FakeGatewayProcess(work / "gateway.log", DEMO_GATEWAY_TOKEN,
                                     DEMO_GATEWAY_FAULTS, seed=seed)
        stack.callback(gateway.stop)
        gateway.start()
        print(f"{len(sc.automations)} automations on {topics.AUTOMATIONS}; fake SMS gateway on "
              f"{gateway.url}; starting a worker and the connector")
        clock = Clock.starting_at(end_ms, CLOCK_SPEED)
        worker = WorkerProcess(bootstrap, work / "data", work / "worker.log",
                               {"SMSCOOL_CLOCK": clock.spec()})
        stack.callback(worker.stop)
        worker.start()
        connector = ConnectorProcess(
            bootstrap, gateway.url, DEMO_GATEWAY_TOKEN, work / "connector", work / "connector.log",
            {"SMSCOOL_CONNECTOR_RATE": "1000", "SMSCOOL_CONNECTOR_CONCURRENCY": "32",
             "SMSCOOL_REPLY_PORT": "0"})
        stack.callback(connector.stop)
        connector.start()
        # The page and the REST API, on the worker's clock so that its counts of the
        # last hour and day see the demo's day as the worker dated it.
        web_token = secrets.token_urlsafe(18)
        web = ServiceProcess(["web"], work / "web.log", {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SMSCOOL_WEB_PORT": str(_web_port()),
            "SMSCOOL_WEB_TOKEN": web_token, "SMSCOOL_CLOCK": clock.spec()})
        stack.callback(web.stop)
        web.start()
        page = f"{web.logged_after('SMS automations page: ', 60)}#token={web_token}"
        print(f"the SMS automations page, while the demo runs: {page}")
        print(f"worker metrics: {worker.metrics_url()}; connector metrics: "
              f"{connector.metrics_url()}")
        started = time.monotonic()
        try:
            # Sends from the other system go first and are waited for, so that every
            # trigger of the day is decided knowing them.
            produce_all(producer(bootstrap), topics.SENT, sc.sends)
            wait_for(bootstrap, topics.BY_NUMBER, events_seen(len(sc.sends)), 60)
            produce_all(producer(bootstrap), topics.TRIGGERS, sc.triggers)
            print(f"{len(sc.triggers)} triggers on {topics.TRIGGERS}; waiting for decisions")
            first: dict[str, dict] = {}

            def collect_decision(records: list[Record]) -> bool:
                d = codecs.DECISION.decode(records[-1].value)
                first.setdefault(d["event_id"], d)
                # Each readable trigger answers at most one automation here, so it
                # gets one first decision; the garbage ones go to the dead letters.
                return len(first) + sc.garbage >= len(sc.triggers)

            wait_for(bootstrap, topics.DECISIONS, collect_decision, 120)
            held = sum(d["outcome"] in ("held_window", "deferred_cooldown")
                       for d in first.values())
            until_s = (sc_end_of_run(sc) - clock.now_ms()) / CLOCK_SPEED / 1000
            print(f"every trigger decided, {held} held; the worker's clock reads "
                  f"{_clock(clock.now_ms())}: waiting {max(until_s, 0):.0f} s until it reads "
                  f"{_clock(sc_end_of_run(sc))}")
            time.sleep(max(until_s, 0) + 2)
            decided: dict[str, list[dict]] = {}
            for record in iter_records(bootstrap, topics.DECISIONS, idle_s=1.0):
                d = codecs.DECISION.decode(record.value)
                decided.setdefault(d["event_id"], []).append(d)
            sending = {d["decision_id"] for records in decided.values() for d in records
                       if d["outcome"] in ("passed", "released")}
            print(f"waiting for the gateway's answer to {len(sending)} SMS")
            outcomes: dict[str, dict] = {}

            def collect_outcome(records: list[Record]) -> bool:
                o = codecs.DELIVERY_OUTCOME.decode(records[-1].value)
                outcomes[o["decision_id"]] = o
                return sending <= set(outcomes)

            wait_for(bootstrap, topics.DELIVERY, collect_outcome, 120)
            elapsed = time.monotonic() - started
            dead = [d for d in (codecs.DEAD_LETTER.decode(r.value) for r in iter_records(
                bootstrap, topics.DEADLETTER, idle_s=0.5, timeout_s=10))
                if d["source_topic"] == topics.TRIGGERS]
            outbox = len({codecs.SEND_REQUEST.decode(r.value)["decision_id"]
                          for r in iter_records(bootstrap, topics.OUTBOX, idle_s=0.5)})
            still_held = len(read_held(bootstrap))
            http_requests = len(gateway.recorded("requests"))
            accepted = len(gateway.recorded("accepted"))
            stop_reply = _stop_reply(bootstrap, sc, decided, gateway, connector.reply_url,
                                     settings.number_tag)
        except (TimeoutError, NotDelivered) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            for process in (worker, connector):
                print(f"--- {process.log_path.name}\n{process.log_tail()}", file=sys.stderr)
            return 1
        _print_summary(sc, decided, dead, still_held, outbox, elapsed, settings.number_tag)
        refused = sum(o["outcome"] != "accepted" for o in outcomes.values())
        print(f"  {'SMS accepted by the fake gateway':38} {accepted:6}")
        print(f"  {'  HTTP requests (with retries)':38} {http_requests:6}")
        print(f"  {'  refused by the gateway, released':38} {refused:6}")
        print(stop_reply)
        if serve:
            print(f"serving until Ctrl-C: the page at {page}", flush=True)
            while web.alive() and worker.alive():
                time.sleep(1)
            print("the page or the worker stopped; stopping the rest", file=sys.stderr)
            return 1
        print("the page stops with the demo; to keep it up: make demo ARGS=--serve")
    return 0


def _stop_reply(bootstrap: str, sc: Scenario, decided: dict[str, list[dict]],
                gateway: FakeGatewayProcess, webhook: str,
                tag: Callable[[str], str]) -> str:
    """A customer who was texted replies "Stop" (the fake gateway posts it to the
    connector's incoming-SMS webhook, as GatewayAPI would); once the opt-out reaches
    the worker, the customer's next trigger is decided. Returns the line saying so."""
    passed = next(d for records in decided.values() for d in records
                  if d["outcome"] == "passed")
    key, earlier = next((key, trigger) for key, trigger in _readable(sc.triggers)
                        if trigger["event_id"] == passed["event_id"])
    answer = gateway.reply(passed["e164"].lstrip("+"), "Stop", webhook)
    if answer != {"status": 200, "answer": {"opted_out": True}}:
        raise TimeoutError(f"the connector's webhook answered the STOP reply with {answer}")
    wait_for(bootstrap, topics.BY_NUMBER, events_seen(1, OPT_OUT_EVENT), 60)
    event_id = f"{passed['event_id']}-after-stop"
    again = {**earlier, "event_id": event_id,
             "occurred_at_ms": int(datetime.now(UTC).timestamp() * 1000)}
    produce_all(producer(bootstrap), topics.TRIGGERS, [(key, json.dumps(again).encode())])

    def decided_again(records: list[Record]) -> bool:
        return bool(codecs.DECISION.decode(records[-1].value)["event_id"] == event_id)

    record = wait_for(bootstrap, topics.DECISIONS, decided_again, 60)[-1]
    outcome = codecs.DECISION.decode(record.value)["outcome"]
    return (f"  STOP reply from {tag(passed['e164'])} (texted by {passed['automation_id']}), "
            f"through the connector's webhook: opted out; its next trigger: {outcome}")


def _readable(triggers: list[tuple[bytes, bytes, int]]) -> Iterator[tuple[bytes, dict]]:
    for key, value, _ in triggers:
        try:
            yield key, codecs.TRIGGER.decode(value)
        except codecs.CodecError:
            continue  # the scenario's unreadable records

