"""What the REST API tells of sms.decisions: counts by automation and outcome over the
last hour and day, and a number's latest decisions ("why was this number not texted?").

Read from the topic's start, every partition, outside any consumer group, into memory:
a day of decisions. A decision given again (a replay after a worker's restart) counts
once. The numbers stay in this process's memory only; the API shows one only to a
caller who sent it.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from streams import codecs, topics

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
# A number's latest decisions kept, of every automation.
LATEST_PER_NUMBER = 20
READ_BATCH = 5000


class DecisionCounts:
    """Decisions by automation and outcome, per minute of `decided_at_ms`, and each
    number's latest. `add` takes one record's value; `since` sums from a moment on."""

    def __init__(self) -> None:
        self._minutes: dict[str, dict[int, Counter[str]]] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (decision id, outcome) -> minute
        # E.164 -> (minute, decision), in the order read.
        self._latest: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._forgotten_before = -1  # the minute `forget_before` last forgot up to

    def add(self, value: bytes | None, now_ms: int) -> None:
        try:
            decision = codecs.DECISION.decode(value)
        except codecs.CodecError:
            return
        minute = decision["decided_at_ms"] // 60_000
        if minute < (now_ms - DAY_MS) // 60_000:
            return  # older than anything asked for
        seen = (decision["decision_id"], decision["outcome"])
        if seen in self._seen:
            return
        self._seen[seen] = minute
        automation = decision["automation_id"] or ""
        self._minutes.setdefault(automation, {}).setdefault(minute, Counter())[
            decision["outcome"]] += 1
        if decision["e164"]:
            self._latest.setdefault(decision["e164"], deque(maxlen=LATEST_PER_NUMBER)
                                    ).append((minute, decision))

    def since(self, automation_id: str, from_ms: int) -> dict[str, int]:
        total: Counter[str] = Counter()
        for minute, counts in self._minutes.get(automation_id, {}).items():
            if minute * 60_000 >= from_ms - 59_999:
                total.update(counts)
        return dict(sorted(total.items()))

    def latest(self, e164: str, automation_id: str | None = None) -> list[dict[str, Any]]:
        """The number's latest decisions, newest first (of one automation if given)."""
        found = [d for _, d in self._latest.get(e164, ())
                 if automation_id is None or d["automation_id"] == automation_id]
        # Decisions of one millisecond stay newest (last read) first.
        return sorted(reversed(found), key=lambda d: d["decided_at_ms"], reverse=True)

    def forget_before(self, from_ms: int) -> None:
        """Forget the minutes before the one `from_ms` falls in. It looks at everything
        kept, so it does the work once a minute: called again within the minute, it
        returns at once."""
        first = from_ms // 60_000
        if first == self._forgotten_before:
            return
        self._forgotten_before = first
        for minutes in self._minutes.values():
            for minute in [m for m in minutes if m < first]:
                del minutes[minute]
        self._seen = {k: m for k, m in self._seen.items() if m >= first}
        for e164 in list(self._latest):
            kept = [(m, d) for m, d in self._latest[e164] if m >= first]
            if kept:
                self._latest[e164] = deque(kept, maxlen=LATEST_PER_NUMBER)
            else:
                del self._latest[e164]


class DecisionReader:
    """Keeps a DecisionCounts in step with sms.decisions: `current()` adds what the
    topic got since the last call. Safe to call from several threads."""

    def __init__(self, bootstrap: str, now_ms: Any) -> None:
        self.counts = DecisionCounts()
        self._now_ms = now_ms
        self._consumer = _reader(bootstrap)
        self._lock = threading.Lock()

    def current(self) -> DecisionCounts:
        with self._lock:
            now = self._now_ms()
            while True:
                batch = self._consumer.consume(READ_BATCH, timeout=0.2)
                for message in batch:
                    if message.error() is None:
                        self.counts.add(message.value(), now)
                if len(batch) < READ_BATCH:
                    break
            self.counts.forget_before(now - DAY_MS)
            return self.counts

    def close(self) -> None:
        self._consumer.close()


def _reader(bootstrap: str) -> Any:
    """sms.decisions from its start, every partition, outside any consumer group."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka import librdkafka_log

    consumer = Consumer({"bootstrap.servers": bootstrap, "logger": librdkafka_log,
                         "group.id": "smscool-web-decisions", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    metadata = consumer.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS]
    consumer.assign([TopicPartition(topics.DECISIONS, p, 0) for p in metadata.partitions])
    return consumer
