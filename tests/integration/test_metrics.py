"""The worker's and the connector's /metrics against the embedded broker: the decision
counters move by exactly the decisions written to sms.decisions, by automation and
outcome (the cooldown agent's and ingest's in one family); triggers read, the table,
lag and held messages are shown; the connector counts its gateway requests, their
latency and its retries; /readyz says what the worker is waiting for."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest

from smscool.processes import ConnectorProcess, FakeGatewayProcess
from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.kafka import produce_all, producer, wait_for
from tests.helpers import decisions_by_event, now_ms, samples, scrape, trigger

pytestmark = pytest.mark.integration

WELCOME = Automation("welcome", "Welcome", country="DK", event_type="signup",
                     message="Welcome, {name}!", sender="Shop", cooldown_enabled=True,
                     cooldown_ms=3_600_000)
NIGHT = Automation("night", "Night owls", country="DK", event_type="night",
                   message="Hi {name}", sender="Shop", timezone="UTC",
                   window="daily 00:00-00:01")


def counted_decisions(url: str) -> Counter[tuple[str, str]]:
    found = samples(scrape(url), "smscool_decisions_total")
    return Counter({(dict(labels)["automation"], dict(labels)["outcome"]): int(value)
                    for labels, value in found.items()})


def test_counters_move_by_exactly_the_decisions_made(bootstrap, start_worker, tmp_path):
    for automation in (WELCOME, NIGHT):
        publish_automation(bootstrap, automation)
    worker = start_worker()
    gateway = FakeGatewayProcess(tmp_path / "gateway.log", "test-token").start()
    connector = ConnectorProcess(bootstrap, gateway.url, "test-token", tmp_path / "connector",
                                 tmp_path / "connector.log").start()
    try:
        url = worker.metrics_url()
        before = counted_decisions(url)
        t = now_ms()
        # Three numbers twice each (one passes, the cooldown holds the other back), a
        # number nobody can read, an automation nobody defined, and (unless it is just
        # past midnight UTC) a message held for the night window.
        triggers = [trigger(f"w-{n}-{i}", f"+452012340{n}", t + i) for n in (1, 2, 3)
                    for i in (0, 1)]
        triggers += [trigger("bad-number", "+45 123", t),
                     trigger("unknown", "+4520123404", t, automation_id="nope"),
                     trigger("night-1", "+4520123405", t, event_type="night")]
        produce_all(producer(bootstrap), topics.TRIGGERS,
                    [(tr["event_id"].encode(), json.dumps(tr).encode()) for tr in triggers])
        by_event = decisions_by_event(bootstrap, len(triggers), 120)
        made = Counter((d["automation_id"] or "", d["outcome"])
                       for decisions in by_event.values() for d in decisions)
        assert made[("welcome", "passed")] == 3 and made[("welcome", "suppressed_cooldown")] == 3
        assert made[("nope", "unknown_automation")] == 1, made
        assert counted_decisions(url) - before == made
        assert counted_decisions(url) == before + made  # and nothing else moved

        scraped = scrape(url)
        read = samples(scraped, "smscool_triggers_read_total")
        assert read[frozenset({("topic", topics.TRIGGERS)})] == len(triggers)
        lag = samples(scraped, "smscool_consumer_lag")
        lag_topics = {dict(labels)["topic"] for labels in lag}
        assert {topics.TRIGGERS, topics.BY_NUMBER} <= lag_topics, lag
        assert sum(samples(scraped, "smscool_table_keys").values()) >= 4
        held = sum(samples(scraped, "smscool_held_messages").values())
        assert held == made[("night", "held_window")]

        with urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=10) as answer:
            ready = json.loads(answer.read())
        assert ready["status"] == "ready" and ready["catalog_loaded"] is True, ready
        assert ready["partitions"] == [0, 1, 2, 3], ready

        # The connector sent the three that passed, once each.
        delivered = [codecs.DELIVERY_OUTCOME.decode(r.value)
                     for r in wait_for(bootstrap, topics.DELIVERY, lambda r: len(r) >= 3, 120)]
        assert [d["outcome"] for d in delivered] == ["accepted"] * 3
        sent = scrape(connector.metrics_url())
        requests = samples(sent, "smscool_gateway_requests_total")
        assert requests == {frozenset({("result", "accepted")}): 3.0}
        assert samples(sent, "smscool_gateway_latency_seconds_count") == {frozenset(): 3.0}
        assert samples(sent, "smscool_gateway_retries_total") == {frozenset(): 0.0}
        connector_lag = samples(sent, "smscool_consumer_lag")
        assert {dict(labels)["topic"] for labels in connector_lag} == {topics.OUTBOX}
        assert all(value == 0 for value in connector_lag.values())
    finally:
        connector.stop()
        gateway.stop()
