"""Contender "textbook-faust": the cooldown as a user following Faust's documentation
would write it, for the benchmark.

One module with a module-level `faust.App`; a `faust.Record` for the trigger, read
through a small registered Faust codec (`avro_trigger`) that decodes the Avro bytes
into the Record's fields (Faust then builds the Record; the codec is named on the
topic, `value_serializer="avro_trigger"`); a RocksDB `app.Table`
(changelogged, Faust's default); and a per-event `async for` agent that normalizes
the number with `streams.numbers.to_e164`, applies the same rule
(`streams.rule.decide`, the same automation terms), keeps the number's state in the
table as JSON (its own small codec below: what a user would store, and a baseline that
does not move when the shipped worker's encoding does), and `await`s
`topic.send(...)` for the decision and, when passed, the send request. Like the
shipped worker it decides in event time: `now` is the trigger's Kafka timestamp.

The input is keyed by E.164 (the benchmark's friendly case), so the agent needs no
`group_by`: the table's key lives on the partition of the event.

Run: `python -m faust -A bench.textbook_faust worker -l info`, configured by
BENCH_BOOTSTRAP_SERVERS, BENCH_APP_ID, BENCH_DATA_DIR, BENCH_PARTITIONS,
BENCH_TRIGGERS_TOPIC, BENCH_DECISIONS_TOPIC, BENCH_OUTBOX_TOPIC, BENCH_STATS_FILE.
"""

import json
import os

import faust
from faust.serializers import codecs as faust_codecs

from bench.outputs import (
    BY_EVENT_TYPE,
    SHIPPED,
    decision_value,
    report_first_read,
    send_request_value,
)
from streams import codecs
from streams.numbers import to_e164
from streams.rule import PASSED, LastSend, NumberState, decide, decision_id_for

PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))


class AvroTriggerCodec(faust_codecs.Codec):
    """Avro bytes of `sms_cooldown.Trigger` <-> the dict Faust builds the Record from."""

    def _dumps(self, obj: dict) -> bytes:
        return codecs.TRIGGER.encode(obj)

    def _loads(self, s: bytes) -> dict:
        return codecs.TRIGGER.decode_avro(s)


faust_codecs.register("avro_trigger", AvroTriggerCodec())


class Trigger(faust.Record):
    event_id: str
    automation_id: str | None
    event_type: str | None
    segment: str | None
    phone: str
    occurred_at_ms: int
    attributes: dict[str, str]


app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-textbook-faust"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP_SERVERS', '127.0.0.1:9092')}",
    store="rocksdb://",
    datadir=os.environ.get("BENCH_DATA_DIR", "textbook-data"),
    topic_partitions=PARTITIONS,
    web_enabled=False,
    value_serializer="raw",  # the outputs and the table's values are bytes already
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=SHIPPED.session_timeout_s,
    broker_rebalance_timeout=SHIPPED.rebalance_timeout_s,
    broker_heartbeat_interval=SHIPPED.heartbeat_interval_s,
    broker_commit_interval=SHIPPED.commit_interval_s,
)

triggers = app.topic(os.environ.get("BENCH_TRIGGERS_TOPIC", "sms.triggers"),
                     key_type=bytes, value_type=Trigger, value_serializer="avro_trigger",
                     partitions=PARTITIONS)
decisions = app.topic(os.environ.get("BENCH_DECISIONS_TOPIC", "sms.decisions"),
                      key_type=bytes, value_type=bytes, partitions=PARTITIONS)
outbox = app.topic(os.environ.get("BENCH_OUTBOX_TOPIC", "sms.outbox"),
                   key_type=bytes, value_type=bytes, partitions=PARTITIONS)

def encode_state(state: NumberState) -> bytes:
    """The number's state as JSON, as a user would store it (the shipped worker's first
    form; the benchmark keeps it here so that this baseline does not move when the
    shipped worker's own encoding changes)."""
    body: dict[str, object] = {"p": list(state.recent_passes)}
    if state.last is not None:
        body.update(t=state.last.at_ms, o=state.last.origin, r=state.last.ref)
    if state.previous is not None:
        body["v"] = [state.previous.at_ms, state.previous.origin, state.previous.ref]
    return json.dumps(body, separators=(",", ":")).encode()


def decode_state(data: bytes | None) -> NumberState | None:
    if data is None:
        return None
    body = json.loads(data)
    last = LastSend(body["t"], body["o"], body["r"]) if "t" in body else None
    previous = LastSend(*body["v"]) if "v" in body else None
    return NumberState(last=last, recent_passes=tuple(body["p"]), previous=previous)


# key: E.164; value: the number's state, JSON (encode_state above)
last_sent = app.Table("last_sent", default=None, partitions=PARTITIONS,
                      key_type=str, value_type=bytes)

_first = True


@app.agent(triggers)
async def cooldown(stream: faust.StreamT[Trigger]) -> None:
    global _first
    async for event in stream.events():
        if _first:
            _first = False
            report_first_read()
        trigger: Trigger = event.value
        message = event.message
        now_ms = round(message.timestamp * 1000)
        automation, terms = BY_EVENT_TYPE[trigger.event_type]
        e164 = to_e164(trigger.phone, automation.country)
        decision_id = decision_id_for(trigger.event_id, automation.automation_id)
        state = decode_state(last_sent.get(e164))
        decision, new_state = decide(decision_id, terms, state, now_ms)
        if new_state is not None and new_state != state:
            last_sent[e164] = encode_state(new_state)
        await decisions.send(key=e164.encode(), value=codecs.DECISION.encode(decision_value(
            decision, trigger.event_id, automation.automation_id, e164,
            message.topic, message.partition, message.offset)))
        if decision.outcome == PASSED:
            text = automation.render(trigger.attributes)
            await outbox.send(key=e164.encode(), value=codecs.SEND_REQUEST.encode(
                send_request_value(decision, trigger.event_id, automation, e164, text)))


if __name__ == "__main__":
    app.main()
