"""Helpers the tests share: the broker's layout, triggers, reading decisions back, worker
logs, a fake gateway in-process, and the REST API. Test modules import from here, never from each
other or from the demo."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from connectors.fake_gateway import FakeGateway
from smscool.processes import ServiceProcess
from streams import codecs, topics
from streams.automations import Automation
from streams.kafka import iter_records, wait_for

PARTITIONS = 4
APP_ID = "sms-cooldown"

# The automations of the bad-input tests and of the table rebuild.
BAD_AUTOMATIONS = [
    Automation("welcome", "Welcome", country="DK", event_type="signup",
               message="Welcome, {name}!", sender="Shop", cooldown_enabled=True,
               cooldown_ms=3_600_000),
    Automation("paused", "Paused", country="DK", event_type="paused_event",
               message="Hi", sender="Shop", enabled=False),
]


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def trigger(event_id: str, phone: str, at: int, **over) -> dict:
    """A trigger of the `welcome` automation's event type, fields as `over` says."""
    return {"event_id": event_id, "automation_id": None, "event_type": "signup",
            "segment": None, "phone": phone, "occurred_at_ms": at,
            "attributes": {"name": "Ada"}, **over}


def decisions_by_event(bootstrap: str, wanted: int, timeout_s: float) -> dict[str, list[dict]]:
    """Every decision record, grouped by event id, once `wanted` events have one."""
    by_event: dict[str, list[dict]] = defaultdict(list)

    def enough(records: list) -> bool:
        d = codecs.DECISION.decode(records[-1].value)
        by_event[d["event_id"]].append(d)
        return len(by_event) >= wanted

    wait_for(bootstrap, topics.DECISIONS, enough, timeout_s)
    # Read again from the start to catch any late duplicate of a replayed trigger.
    by_event.clear()
    for record in iter_records(bootstrap, topics.DECISIONS, idle_s=2.0):
        d = codecs.DECISION.decode(record.value)
        by_event[d["event_id"]].append(d)
    return by_event


def worker_logs(tmp_path: Path, tail: int = 4000) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}"
        for log in sorted(tmp_path.glob("worker-*.log"))
    )


def run_with_fake(scenario, *, token, **fake_options):
    """`scenario(fake, base_url, session)` with a FakeGateway started on a loopback
    port; its result."""

    async def main():
        fake = FakeGateway(token, **fake_options)
        base_url = await fake.start()
        try:
            async with aiohttp.ClientSession() as session:
                return await scenario(fake, base_url, session)
        finally:
            await fake.stop()

    return asyncio.run(main())


class Message:
    """A record as confluent-kafka's consumer hands it over, for loops fed in-process."""

    def __init__(self, topic: str, partition: int, offset: int, timestamp_ms: int,
                 key: bytes | None, value: bytes | None) -> None:
        self._fields = (topic, partition, offset, timestamp_ms, key, value)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._fields[0]  # type: ignore[return-value]

    def partition(self) -> int:
        return self._fields[1]  # type: ignore[return-value]

    def offset(self) -> int:
        return self._fields[2]  # type: ignore[return-value]

    def timestamp(self) -> tuple[int, int]:
        return (1, self._fields[3])  # type: ignore[return-value]

    def key(self) -> bytes | None:
        return self._fields[4]  # type: ignore[return-value]

    def value(self) -> bytes | None:
        return self._fields[5]  # type: ignore[return-value]


WEB_TOKEN = "web-test-token"
WEB_AUTH = {"Authorization": f"Bearer {WEB_TOKEN}"}


def start_web(bootstrap: str, tmp_path: Path, **env: str) -> ServiceProcess:
    """`smscool web` on a port it picks; its address is `.base`."""
    web = ServiceProcess(["web"], tmp_path / "web.log", {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SMSCOOL_WEB_PORT": "0", **env}).start()
    web.base = web.logged_after("REST API listening: ", 60)  # type: ignore[attr-defined]
    return web


def call(base: str, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, object]:
    """One request to the REST API (with the test token unless `headers` are given):
    its status and its JSON."""
    request = urllib.request.Request(
        base + path, method=method, headers={"Content-Type": "application/json",
                                             **(WEB_AUTH if headers is None else headers)},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A /metrics page as {(sample name, its labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def samples(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
            ) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one name, by their labels."""
    return {labels: value for (sample, labels), value in scraped.items() if sample == name}
