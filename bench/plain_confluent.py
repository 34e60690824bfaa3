"""Contender "plain-confluent": the cooldown as one confluent-kafka loop without a
stream framework, for the benchmark — the ceiling of this stack in Python.

Per batch (up to BENCH_BATCH records, default 5,000): decode the Avro triggers,
normalize every number with `streams.numbers.to_e164`, read the states of the batch's
numbers with one rocksdict multi-get, apply the same rule (`streams.rule.decide`, the
same automation terms) in record order, keeping the state in the project's own
encoding (`streams.state`, whatever the shipped worker uses: this is the ceiling),
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

from bench.outputs import (
    BY_EVENT_TYPE,
    SHIPPED,
    decision_value,
    report_first_read,
    send_request_value,
)
from streams import codecs
from streams.kafka import producer
from streams.numbers import to_e164
from streams.rule import PASSED, decide, decision_id_for
from streams.state import decode_state, encode_state


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


def decide_batch(messages: list, db: Rdict, out: object, decisions_topic: str,
                 outbox_topic: str, changelog_topic: str) -> None:
    items = []
    for message in messages:
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(message.error())
        trigger = codecs.TRIGGER.decode_avro(message.value())
        automation, terms = BY_EVENT_TYPE[trigger["event_type"]]
        e164 = to_e164(trigger["phone"], automation.country)
        items.append((message, trigger, automation, terms, e164))
    keys = list({item[4].encode() for item in items})
    states = {key: decode_state(value) for key, value in zip(keys, db[keys], strict=True)}
    partition_of: dict[bytes, int] = {}
    changed: set[bytes] = set()
    produce = out.produce  # type: ignore[attr-defined]
    for message, trigger, automation, terms, e164 in items:
        key = e164.encode()
        state = states[key]
        event_id = trigger["event_id"]
        decision, new_state = decide(decision_id_for(event_id, automation.automation_id),
                                     terms, state, message.timestamp()[1])
        if new_state is not None and new_state != state:
            states[key] = new_state
            changed.add(key)
            partition_of[key] = message.partition()
        produce(decisions_topic, key=key, value=codecs.DECISION.encode(decision_value(
            decision, event_id, automation.automation_id, e164,
            message.topic(), message.partition(), message.offset())))
        if decision.outcome == PASSED:
            text = automation.render(trigger["attributes"])
            produce(outbox_topic, key=key, value=codecs.SEND_REQUEST.encode(
                send_request_value(decision, event_id, automation, e164, text)))
    batch = WriteBatch(raw_mode=True)
    for key in changed:
        value = encode_state(states[key])  # type: ignore[arg-type]
        batch.put(key, value)
        # The changelog partition is the input's: the input is keyed by E.164.
        produce(changelog_topic, key=key, value=value, partition=partition_of[key])
    db.write(batch)


if __name__ == "__main__":
    run()
