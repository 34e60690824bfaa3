"""The cooldown agent: a Faust agent over the bundle topic, joined with the `last_sent`
table, deciding a bundle at a time.

Ingest (`streams.ingest`, outside Faust's stream) writes every trigger, outside send
and delivery outcome as a number event into a bundle on the partition its number
falls on. Per bundle the agent reads the states of the bundle's numbers with one
multi-get, applies `streams.step.step` to each event in order, writes the changed
states with one write batch (`streams.number_states`), and sends the decisions, send
requests and changelog records through librdkafka. Faust keeps the table's life:
its stores, changelog topic, recovery, partition assignment and offset commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from streams import codecs, topics
from streams.bundles import decode_bundle
from streams.faust_patches import StoreAccess
from streams.number_states import NumberStates
from streams.outcomes import INVALID_RECORD
from streams.records import DeadLetter, DecisionRecord, NumberEvent, Source
from streams.rule import NumberState
from streams.settings import Settings
from streams.state import decode_state, encode_state
from streams.step import InvalidEvent, step

log = logging.getLogger(__name__)

# Faust opens each partition's RocksDB with 64 MiB memtables (up to three) and a 2 GiB
# block cache: a worker with four partitions would grow by hundreds of MiB for state
# that takes ~40 bytes a number on disk. The state is small and read by multi-get.
STORE_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 32 * 1024 * 1024,
}


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    last_sent: faust.types.TableT
    states: NumberStates
    # Anything with send(topic, key, value, partition=None): KafkaOutputs in a worker,
    # a recorder in tests.
    outputs: Any


def build_pipeline(app: faust.App, settings: Settings, *, outputs: Any) -> Pipeline:
    """Declare the bundle topic, the table and the cooldown agent on `app`."""
    by_number = app.topic(topics.BY_NUMBER, key_type=bytes, value_type=bytes,
                          partitions=settings.partitions)
    last_sent = app.Table(
        topics.LAST_SENT_TABLE, default=None, partitions=settings.partitions,
        key_type=bytes, value_type=bytes, options=dict(STORE_OPTIONS),
    )
    states = NumberStates(StoreAccess(last_sent), outputs,
                          topics.changelog_topic(settings.app_id))
    pipeline = Pipeline(app, settings, last_sent, states, outputs)

    # The agent yields nothing: for each value an agent yields, Faust writes a debug
    # log record and looks for sinks.
    @app.agent(by_number, name="cooldown")
    async def cooldown(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            decide_bundle(pipeline, Source(message.topic, message.partition, message.offset,
                                           round(message.timestamp * 1000), message.key,
                                           message.value))

    return pipeline


def decide_bundle(pipeline: Pipeline, source: Source) -> None:
    """Decide every event of the bundle read at `source`, in order."""
    outputs = pipeline.outputs
    try:
        events = decode_bundle(source.value)
    except codecs.CodecError as exc:
        # Only a bug or a foreign writer puts such a record on the internal topic.
        log.warning("dead letter from %s[%d]@%d: %s", source.topic, source.partition,
                    source.offset, exc.detail)
        _dead_letter(outputs, DeadLetter.of(source, exc.reason, exc.detail,
                                            source.timestamp_ms))
        return
    partition = source.partition
    if not pipeline.states.open(partition):
        # A bundle of a partition revoked since it was fetched: its offset is not
        # committed here, and the worker that has the partition now decides it.
        log.info("bundle %s[%d]@%d skipped: the partition is no longer assigned",
                 source.topic, partition, source.offset)
        return
    keys = list({event.e164.encode(): None for event in events})
    states: dict[bytes, NumberState | None] = {}
    unreadable: set[bytes] = set()
    for key, value in zip(keys, pipeline.states.read(partition, keys), strict=True):
        try:
            states[key] = decode_state(value)
        except ValueError:
            unreadable.add(key)
    changed: dict[bytes, NumberState] = {}
    send = outputs.send
    for event in events:
        key = event.e164.encode()
        if key in unreadable:
            _dead_letter_event(pipeline, event, "the number's stored state cannot be read")
            continue
        state = states[key]
        try:
            new_state, records = step(state, event)
        except InvalidEvent as exc:
            _dead_letter_event(pipeline, event, str(exc))
            continue
        if new_state is not state and new_state is not None and new_state != state:
            states[key] = changed[key] = new_state
        for record in records:
            if isinstance(record, DecisionRecord):
                send(topics.DECISIONS, key, codecs.DECISION.encode(record.to_dict()))
            else:
                send(topics.OUTBOX, key, codecs.SEND_REQUEST.encode(record.to_dict()))
    pipeline.states.write(partition, {key: encode_state(state)
                                      for key, state in changed.items()})


def _dead_letter_event(pipeline: Pipeline, event: NumberEvent, detail: str) -> None:
    log.warning("dead letter from %s[%d]@%d (number %s): %s", event.source_topic,
                event.source_partition, event.source_offset,
                pipeline.settings.number_tag(event.e164), detail)
    value = codecs.NUMBER_EVENT.encode(event.to_dict())
    _dead_letter(pipeline.outputs, DeadLetter(
        INVALID_RECORD, detail, event.source_topic, event.source_partition,
        event.source_offset, event.e164.encode(), value, event.at_ms))


def _dead_letter(outputs: Any, letter: DeadLetter) -> None:
    outputs.send(topics.DEADLETTER, letter.key or b"", codecs.DEAD_LETTER.encode(letter.to_dict()))
