"""Helpers the tests share: the broker's layout, triggers, reading decisions back, worker
logs, and a fake gateway in-process. Test modules import from here, never from each
other or from the demo."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from connectors.fake_gateway import FakeGateway
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
