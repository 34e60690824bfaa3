"""Contender "plain-confluent": the cooldown as one confluent-kafka loop without a
stream framework, for the benchmark — the ceiling of this stack in Python.

Per batch (up to BENCH_BATCH records, default 5,000): turn each trigger into a number
event with the shipped worker's own ingest step (`streams.normalize.route`: decode,
E.164, the automation's terms and text), read the states of the batch's numbers with
one rocksdict multi-get, apply the shipped worker's own `streams.step.step` in record
order, keeping the state in the project's own encoding (`streams.state`),
write the changed states in one write batch and to a compacted changelog topic (so its state
survives a lost disk like the Faust contenders'), produce the decisions and send
requests, wait for their acknowledgements, then commit the batch's offsets
(at-least-once). It decides in event time: `now` is the trigger's Kafka timestamp.
A batch is what has arrived within BENCH_FETCH_WAIT_MS (default 20 ms), which is also
its fetch wait, so that it decides soon at low rates too.

It relies on the input being keyed by E.164 (the benchmark's friendly case) and runs
alone in its group: one RocksDB for every partition, no rebalance handling.

Run: `python -m bench.plain_confluent`, configured by the BENCH_* variables of
`bench.textbook_faust`, BENCH_BATCH and BENCH_FETCH_WAIT_MS.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException
from rocksdict import Options, Rdict, WriteBatch

from bench.outputs import SHIPPED, report_first_read
from bench.workload import bench_automations
from streams import codecs
from streams.automations import Catalog
from streams.kafka import producer
from streams.normalize import Limits, route
from streams.records import DecisionRecord, NumberEvent, Source
from streams.state import decode_state, encode_state
from streams.step import step


def run() -> None:
    env = os.environ
    bootstrap = env.get("BENCH_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    app_id = env.get("BENCH_APP_ID", "bench-plain-confluent")
    triggers_topic = env.get("BENCH_TRIGGERS_TOPIC", "sms.triggers")
    decisions_topic = env.get("BENCH_DECISIONS_TOPIC", "sms.decisions")
    outbox_topic = env.get("BENCH_OUTBOX_TOPIC", "sms.outbox")
    changelog_topic = f"{app_id}-last_sent-changelog"
    batch_size = int(env.get("BENCH_BATCH", "5000"))
    wait_ms = int(env.get("BENCH_FETCH_WAIT_MS", "20"))
    data_dir = Path(env.get("BENCH_DATA_DIR", "plain-data"))
    data_dir.mkdir(parents=True, exist_ok=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": app_id,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": int(SHIPPED.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(SHIPPED.heartbeat_interval_s * 1000),
        # The embedded broker holds a fetch for its whole wait even when records
        # arrive; a short wait keeps latency low there (under load it changes nothing).
        "fetch.wait.max.ms": wait_ms,
    })
    out = producer(bootstrap, **{"queue.buffering.max.messages": 1_000_000})
    db = Rdict(str(data_dir / "last_sent.db"), Options(raw_mode=True))
    consumer.subscribe([triggers_topic])
    first = True
    try:
        while not stopping:
            messages = consumer.consume(batch_size, timeout=wait_ms / 1000)
            if not messages:
                continue
            if first:
                first = False
                report_first_read()
            decide_batch(messages, db, out, decisions_topic, outbox_topic, changelog_topic)
            out.flush()
            consumer.commit(asynchronous=False)
    finally:
        out.flush(10)
        consumer.close()
        db.close()


CATALOG = Catalog(bench_automations())
LIMITS = Limits(SHIPPED.max_clock_skew_ms, SHIPPED.max_trigger_age_ms)


def decide_batch(messages: list, db: Rdict, out: object, decisions_topic: str,
                 outbox_topic: str, changelog_topic: str) -> None:
    events: list[tuple[NumberEvent, int]] = []
    for message in messages:
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(message.error())
        source = Source(message.topic(), message.partition(), message.offset(),
                        message.timestamp()[1], message.key(), message.value())
        for output in route(source, CATALOG, LIMITS):
            # The benchmark's triggers are all valid, and each answers one automation.
            assert isinstance(output.record, NumberEvent), output
            events.append((output.record, message.partition()))
    keys = list({event.e164.encode(): None for event, _ in events})
    states = {key: decode_state(value) for key, value in zip(keys, db[keys], strict=True)}
    partition_of: dict[bytes, int] = {}
    changed: set[bytes] = set()
    produce = out.produce  # type: ignore[attr-defined]
    for event, partition in events:
        key = event.e164.encode()
        state = states[key]
        new_state, records = step(state, event)
        if new_state is not None and new_state != state:
            states[key] = new_state
            changed.add(key)
            partition_of[key] = partition
        for record in records:
            if isinstance(record, DecisionRecord):
                produce(decisions_topic, key=key, value=codecs.DECISION.encode(record.to_dict()))
            else:
                produce(outbox_topic, key=key, value=codecs.SEND_REQUEST.encode(record.to_dict()))
    batch = WriteBatch(raw_mode=True)
    for key in changed:
        value = encode_state(states[key])  # type: ignore[arg-type]
        batch.put(key, value)
        # The changelog partition is the input's: the input is keyed by E.164.
        produce(changelog_topic, key=key, value=value, partition=partition_of[key])
    db.write(batch)


if __name__ == "__main__":
    run()
