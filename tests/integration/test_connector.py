"""The gateway connector against the fake gateway on loopback, on the embedded broker:
faults injected at the gateway, the connector killed and restarted, and the whole way
from trigger to SMS and back into the cooldown."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from smscool.processes import ConnectorProcess, FakeGatewayProcess
from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.kafka import iter_records, produce_all, producer, wait_for
from tests.helpers import decisions_by_event, now_ms, trigger

pytestmark = pytest.mark.integration

TOKEN = "test-token"


def fake_faults(gateway: FakeGatewayProcess, **faults: float) -> None:
    request = urllib.request.Request(
        f"{gateway.url}/_fake/faults", data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def start_gateway(tmp_path: Path):
    started: list[FakeGatewayProcess] = []

    def start(**faults: float) -> FakeGatewayProcess:
        gateway = FakeGatewayProcess(tmp_path / "gateway.log", TOKEN, faults, seed=7).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def start_connector(bootstrap: str, tmp_path: Path):
    started: list[ConnectorProcess] = []

    def start(gateway: FakeGatewayProcess, **env: str) -> ConnectorProcess:
        connector = ConnectorProcess(
            bootstrap, gateway.url, TOKEN, tmp_path / "connector-data",
            tmp_path / "connector.log", {"SMSCOOL_LOG_LEVEL": "INFO", **env}).start()
        started.append(connector)
        return connector

    yield start
    for connector in started:
        connector.stop()


def send_request(i: int) -> dict:
    return {"decision_id": f"dec-{i:06d}", "event_id": f"evt-{i}", "automation_id": "welcome",
            "e164": f"+4520{i:06d}", "text": f"Hello {i}", "sender": "Shop",
            "decided_at_ms": now_ms()}


def max_in_any_window(times_s: list[float], window_s: float = 1.0) -> int:
    times_s = sorted(times_s)
    most, start = 0, 0
    for end, t in enumerate(times_s):
        while t - times_s[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_faults_and_kills_send_each_decision_once(bootstrap, start_gateway, start_connector,
                                                  tmp_path):
    n, rate = 3000, 300
    requests = [send_request(i) for i in range(n)]
    # A replayed decision reaches the outbox twice; it must still be sent once.
    replays = requests[:50]
    gateway = start_gateway(p500=0.05, p429=0.05, p400=0.01, ptimeout=0.01,
                            timeout_delay=2.0, retry_after=1)
    env = {"SMSCOOL_CONNECTOR_RATE": str(rate), "SMSCOOL_CONNECTOR_TIMEOUT_S": "1",
           "SMSCOOL_CONNECTOR_CONCURRENCY": "32"}
    produce_all(producer(bootstrap), topics.OUTBOX, [
        (r["e164"].encode(), codecs.SEND_REQUEST.encode(r), now_ms())
        for r in requests + replays])

    connector = start_connector(gateway, **env)
    kills = 0
    for share in (0.3, 0.6):
        deadline = time.monotonic() + 120
        while len(gateway.recorded("accepted")) < share * n:
            assert connector.alive(), connector.log_tail()
            assert time.monotonic() < deadline, "the connector made no progress"
            time.sleep(0.2)
        connector.kill()
        kills += 1
        connector = start_connector(gateway, **env)

    outcomes: dict[str, dict] = {}

    def all_decided(records: list) -> bool:
        o = codecs.DELIVERY_OUTCOME.decode(records[-1].value)
        outcomes[o["decision_id"]] = o
        return len(outcomes) >= n

    try:
        wait_for(bootstrap, topics.DELIVERY, all_decided, 300)
    except TimeoutError:
        pytest.fail(f"not every request got an outcome\n{connector.log_tail()}")
    connector.stop()

    accepted_by_gateway = Counter(a["userref"] for a in gateway.recorded("accepted"))
    duplicates = {d for d, count in accepted_by_gateway.items() if count > 1}
    # A decision id the gateway accepted twice must be one whose first attempt the
    # connector could not know the fate of: a timeout, or a kill with it in flight.
    unexplained = {d for d in duplicates if not outcomes[d]["ambiguous"]}
    assert not unexplained, sorted(unexplained)[:10]

    dead = [codecs.DEAD_LETTER.decode(r.value)
            for r in iter_records(bootstrap, topics.DEADLETTER, idle_s=1.0)]
    dead_ids = {codecs.SEND_REQUEST.decode(d["value"])["decision_id"]: d["reason"]
                for d in dead}
    by_outcome = defaultdict(set)
    for decision_id, o in outcomes.items():
        by_outcome[o["outcome"]].add(decision_id)
    for r in requests:
        d = r["decision_id"]
        if outcomes[d]["outcome"] == "accepted":
            assert accepted_by_gateway[d] >= 1
        else:
            assert dead_ids.get(d) in ("gateway_rejected", "gateway_gave_up"), d
    assert by_outcome["failed"], "the fault mix should include refusals"

    arrivals = [r["at"] for r in gateway.recorded("requests")]
    busiest_second = max_in_any_window(arrivals)
    assert busiest_second <= rate

    sent = [codecs.SENT.decode(r.value) for r in iter_records(bootstrap, topics.SENT, idle_s=1.0)]
    sent_ids = [s["decision_id"] for s in sent]
    assert len(sent_ids) == len(set(sent_ids)), "a send reported twice on sms.sent"
    assert set(sent_ids) == by_outcome["accepted"]

    figures = {
        "send requests": n, "replayed requests": len(replays), "http requests": len(arrivals),
        "accepted": len(by_outcome["accepted"]),
        "retried": len(arrivals) - n,
        "dead-lettered": len(dead_ids),
        "  refused (400)": len(by_outcome["failed"]),
        "  given up": len(by_outcome["given_up"]),
        "ambiguous": sum(o["ambiguous"] for o in outcomes.values()),
        "accepted twice (all ambiguous)": len(duplicates),
        "kills": kills, "busiest second": busiest_second, "rate limit": rate,
    }
    print("\nconnector fault test:\n" + "\n".join(f"  {k:32} {v}" for k, v in figures.items()))


WELCOME = Automation("welcome", "Welcome", country="DK", event_type="signup",
                     message="Welcome, {name}!", sender="Shop", cooldown_enabled=True,
                     cooldown_ms=60_000)


def test_trigger_to_sms_and_back_into_the_cooldown(bootstrap, start_worker, start_gateway,
                                                   start_connector, tmp_path):
    publish_automation(bootstrap, WELCOME)
    gateway = start_gateway()
    start_worker()
    start_connector(gateway)
    number = "+4520123456"

    # A trigger from 70 s ago passes; its SMS goes out now.
    first_at = now_ms() - 70_000
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        (b"c1", codecs.TRIGGER.encode(trigger("first", "20 12 34 56", first_at)), first_at)])
    assert decisions_by_event(bootstrap, 1, 120)["first"][0]["outcome"] == "passed"
    sent = wait_for(bootstrap, topics.SENT, lambda rs: len(rs) >= 1, 120)
    sent_at = codecs.SENT.decode(sent[0].value)["sent_at_ms"]
    (accepted,) = gateway.recorded("accepted")
    assert accepted["msisdn"] == 4520123456 and accepted["message"] == "Welcome, Ada!"

    # 70 s after the first trigger its reservation no longer holds the number back,
    # but the SMS that really went out a moment ago does.
    second_at = now_ms()
    assert second_at - first_at >= WELCOME.cooldown_ms
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        (b"c1", codecs.TRIGGER.encode(trigger("second", number, second_at)), second_at)])
    second = decisions_by_event(bootstrap, 2, 120)["second"][0]
    assert second["outcome"] == "suppressed_cooldown"
    assert (second["cause_at_ms"], second["cause_origin"]) == (sent_at, "welcome")

    # A send the gateway refuses for good releases the number again.
    fake_faults(gateway, p400=1.0)
    other = "+4520123457"
    at = now_ms()
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        (b"c2", codecs.TRIGGER.encode(trigger("refused", other, at)), at)])
    assert decisions_by_event(bootstrap, 3, 120)["refused"][0]["outcome"] == "passed"
    wait_for(bootstrap, topics.DELIVERY,
             lambda rs: codecs.DELIVERY_OUTCOME.decode(rs[-1].value)["outcome"] == "failed", 120)
    fake_faults(gateway, p400=0.0)
    deadline = time.monotonic() + 60
    for i in range(100):
        assert time.monotonic() < deadline, "the refused send's reservation was not released"
        at = now_ms()
        produce_all(producer(bootstrap), topics.TRIGGERS, [
            (b"c2", codecs.TRIGGER.encode(trigger(f"retry-{i}", other, at)), at)])
        decision = decisions_by_event(bootstrap, 4 + i, 60)[f"retry-{i}"][0]
        if decision["outcome"] == "passed":
            break
        time.sleep(0.5)
