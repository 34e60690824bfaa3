"""The cooldown agent: a Faust agent over the bundle topic, joined with the `last_sent`
table, deciding a bundle at a time.

Ingest (`streams.ingest`, outside Faust's stream) writes every trigger, outside send
and delivery outcome as a number event into a bundle on the partition its number
falls on. Per bundle the agent reads the states of the bundle's numbers with one
multi-get, applies `streams.step.step` to each event in order, writes the changed
states with one write batch (`streams.number_states`), and sends the decisions, send
requests and changelog records through librdkafka. Faust keeps the table's life:
its stores, changelog topic, recovery, partition assignment and offset commits.

Held messages live in the same states; the release timer (`release_due`) reads each
assigned partition's release index up to now and steps the numbers it names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import faust

from streams import codecs, topics
from streams.bundles import decode_bundle
from streams.erasure import decode_mark, encode_mark, opt_out_key
from streams.faust_patches import StoreAccess
from streams.held import held_records, index_changes, index_keys, parse_index_key
from streams.metrics import count_agent_decision
from streams.number_states import NUMBER_KEYS_START, NumberStates
from streams.outcomes import INVALID_RECORD
from streams.records import (
    CANCEL_EVENT,
    DUE_EVENT,
    ERASE_EVENT,
    PROGRESS_EVENT,
    DeadLetter,
    DecisionRecord,
    NumberEvent,
    SendRequest,
    Source,
)
from streams.rule import NumberState, retained
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
# Numbers the release timer decides per partition per pass; the rest wait for the next
# pass, which follows at once, so the event loop is never held for long.
RELEASE_BATCH = 5000
# Numbers the retention sweep looks at per partition per pass, and how often it passes:
# a partition of a million numbers is swept in a few minutes.
RETENTION_BATCH = 5000
RETENTION_TICK_S = 1.0


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    last_sent: faust.types.TableT
    states: NumberStates
    # Anything with send(topic, key, value, partition=None): KafkaOutputs in a worker,
    # a recorder in tests.
    outputs: Any
    # The input partitions ingest reads, whose progress releases wait for; None: the
    # release timer's clock alone decides (tests that call `release_due` themselves).
    inputs: frozenset[tuple[str, int]] | None = None
    # Bundle partition -> input partition -> how far in time ingest has read it, as
    # its progress records on that bundle partition say.
    progress: dict[int, dict[tuple[str, int], int]] = field(default_factory=dict)
    # How old a number's last SMS may get before its state is forgotten (`retained`),
    # asked before each pass of the retention sweep; None: no sweep (yet).
    retention_horizon: Callable[[], int | None] = lambda: None
    # Partition -> the key the retention sweep goes on from.
    sweep_from: dict[int, bytes] = field(default_factory=dict)
    # Bundle partition -> the offset of the last bundle decided (the lag's measure).
    decided_offsets: dict[int, int] = field(default_factory=dict)

    def releasable_until(self, partition: int, now_ms: int) -> int:
        """The latest release time that may go out on `partition` now: what every input
        partition has been read up to, and never past the clock."""
        if self.inputs is None:
            return now_ms
        read = self.progress.get(partition, {})
        if not self.inputs <= read.keys():
            return -1  # some input's progress is not known yet: nothing is releasable
        return min(now_ms, *(read[where] for where in self.inputs))


def build_pipeline(app: faust.App, settings: Settings, *, outputs: Any,
                   inputs: frozenset[tuple[str, int]] | None = None,
                   retention_horizon: Callable[[], int | None] | None = None) -> Pipeline:
    """Declare the bundle topic, the table, the cooldown agent, the release timer and
    the retention sweep on `app`; `inputs` and `retention_horizon`: see `Pipeline`."""
    by_number = app.topic(topics.BY_NUMBER, key_type=bytes, value_type=bytes,
                          partitions=settings.partitions)
    last_sent = app.Table(
        topics.LAST_SENT_TABLE, default=None, partitions=settings.partitions,
        key_type=bytes, value_type=bytes, options=dict(STORE_OPTIONS),
    )
    states = NumberStates(StoreAccess(last_sent), outputs,
                          topics.changelog_topic(settings.app_id), settings.partitions)
    pipeline = Pipeline(app, settings, last_sent, states, outputs, inputs)
    if retention_horizon is not None:
        pipeline.retention_horizon = retention_horizon

    # The agent yields nothing: for each value an agent yields, Faust writes a debug
    # log record and looks for sinks.
    @app.agent(by_number, name="cooldown")
    async def cooldown(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            decide_bundle(pipeline, Source(message.topic, message.partition, message.offset,
                                           round(message.timestamp * 1000), message.key,
                                           message.value))
            pipeline.decided_offsets[message.partition] = message.offset

    tick_s = settings.release_tick_ms / 1000

    @app.task
    async def release_timer() -> None:
        clock = settings.clock
        while True:
            # Only between rebalances: a partition being recovered has a half-read
            # index and states, and one just revoked is another worker's.
            if app.rebalancing or app.in_recovery:
                await asyncio.sleep(tick_s)
                continue
            try:
                releases = plan_releases(pipeline, clock.now_ms())
                decided = releases.stepped
                if decided:
                    # The releases' records first (`plan_releases`), then the states;
                    # these may go to the stores once their changelog records are
                    # acknowledged, and without this would wait for the next bundle.
                    await outputs.flush()
                    write_releases(pipeline, releases)
                    await outputs.flush()
                    pipeline.states.persist()
            except Exception:
                # A task that raised would stop for good, and with it every release of
                # this worker's partitions: the held messages are still in the index,
                # so the next pass tries again (and the log says why it failed).
                log.exception("release timer: a pass failed; trying again")
                decided = 0
            await asyncio.sleep(0 if decided >= RELEASE_BATCH else tick_s)

    @app.task
    async def state_retention() -> None:
        while True:
            await asyncio.sleep(RETENTION_TICK_S)
            if app.rebalancing or app.in_recovery:
                continue
            try:
                horizon = pipeline.retention_horizon()
                if horizon is None:
                    continue
                forgotten = forget_expired(pipeline, settings.clock.now_ms(), horizon)
                if forgotten:
                    await outputs.flush()
                    pipeline.states.persist()
                    log.info("retention: %d numbers' states forgotten (last SMS more than "
                             "%d ms ago)", forgotten, horizon)
            except Exception:
                log.exception("retention: a pass failed; trying again")

    return pipeline


def forget_expired(pipeline: Pipeline, now_ms: int, horizon_ms: int) -> int:
    """One pass of the retention sweep: on every assigned partition, up to
    RETENTION_BATCH numbers from where the last pass stopped (the next pass starts over
    at the end), each state deleted or cut down to its opt-out where `retained` lets
    it go. Returns how many states changed."""
    states = pipeline.states
    forgotten = 0
    for partition in range(pipeline.settings.partitions):
        if not states.open(partition):
            continue
        keys = states.number_keys(partition, pipeline.sweep_from.get(partition, NUMBER_KEYS_START),
                                  RETENTION_BATCH)
        pipeline.sweep_from[partition] = keys[-1] + b"\x00" \
            if len(keys) == RETENTION_BATCH else NUMBER_KEYS_START
        writes: dict[bytes, bytes | None] = {}
        for key, value in zip(keys, states.read(partition, keys), strict=True):
            try:
                state = decode_state(value)
            except ValueError:
                continue  # kept as it is: a bundle for the number dead-letters it
            if state is None:
                continue
            kept = retained(state, now_ms, horizon_ms)
            if kept is not state:
                writes[key] = None if kept is None else encode_state(_dated(kept, now_ms))
        states.write(partition, writes)
        forgotten += len(writes)
    return forgotten


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
    if events and events[0].kind == PROGRESS_EVENT:  # ingest writes them apart
        read = pipeline.progress.setdefault(partition, {})
        for event in events:
            where = (event.source_topic, event.source_partition)
            read[where] = max(read.get(where, -1), event.at_ms)
        return
    if not pipeline.states.open(partition):
        # A bundle of a partition revoked since it was fetched: its offset is not
        # committed here, and the worker that has the partition now decides it.
        log.info("bundle %s[%d]@%d skipped: the partition is no longer assigned",
                 source.topic, partition, source.offset)
        return
    if any(event.kind == CANCEL_EVENT for event in events):
        events = _cancels_per_number(pipeline, partition, events)
    keys = list({event.e164.encode(): None for event in events})
    states: dict[bytes, NumberState | None] = {}
    unreadable: set[bytes] = set()
    for key, value in zip(keys, pipeline.states.read(partition, keys), strict=True):
        try:
            states[key] = decode_state(value)
        except ValueError:
            unreadable.add(key)
    secret = pipeline.settings.number_secret
    restored = _restore_erased_opt_outs(pipeline, partition, states) if secret else set()
    before = dict(states)
    changed: dict[bytes, NumberState | None] = {}
    erased: set[bytes] = set()
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
        if event.kind == ERASE_EVENT:
            erased.add(key)
            log.info("number %s erased (asked by %s)", pipeline.settings.number_tag(key),
                     event.origin)
            # Written even when only an opt-out was left: it moves under the hash.
            states[key] = changed[key] = new_state
        elif new_state is not state and new_state != state:
            states[key] = changed[key] = new_state
        _send_records(send, key, records)
    writes: dict[bytes, bytes | None] = {}
    for key, state in changed.items():
        old = before[key]
        if key in restored:
            # Back under its number, or opted back in: the hashed copy goes.
            writes[opt_out_key(secret, key)] = None
        if state is None:
            writes[key] = None
        elif key in erased and secret and state == NumberState(opted_out=state.opted_out):
            assert state.opted_out is not None
            writes[key] = None
            writes[opt_out_key(secret, key)] = encode_mark(state.opted_out)
        else:
            writes[key] = encode_state(_dated(state, source.timestamp_ms))
        if (state is not None and state.held) or (old is not None and old.held):
            _held_changes(pipeline, key, old, state, writes)
    pipeline.states.write(partition, writes)


def _dated(state: NumberState, at_ms: int) -> NumberState:
    """The state as it is written at `at_ms`: one without a last send carries the time,
    for retention to go by."""
    return state if state.last is not None else replace(state, updated_at_ms=at_ms)


def _restore_erased_opt_outs(pipeline: Pipeline, partition: int,
                             states: dict[bytes, NumberState | None]) -> set[bytes]:
    """The numbers without a state that were erased while opted out: their opt-out,
    kept by the number's hash, as their state. Returns those numbers."""
    secret = pipeline.settings.number_secret
    missing = [key for key, state in states.items() if state is None]
    if not missing:
        return set()
    found = pipeline.states.read(partition, [opt_out_key(secret, key) for key in missing])
    restored = set()
    for key, value in zip(missing, found, strict=True):
        if value is not None:
            states[key] = NumberState(opted_out=decode_mark(value))
            restored.add(key)
    return restored


@dataclass
class Releases:
    """A pass of the release timer, its records sent and its state writes not made yet:
    per partition, per number, the writes and the state bytes they follow from."""

    stepped: int = 0
    writes: dict[int, dict[bytes, tuple[bytes | None, dict[bytes, bytes | None]]]] = \
        field(default_factory=dict)


def release_due(pipeline: Pipeline, now_ms: int) -> int:
    """Step every number of the assigned partitions whose held messages are due at
    `now_ms` (and releasable: `Pipeline.releasable_until`), and write their states;
    returns how many numbers were stepped (at most RELEASE_BATCH a partition)."""
    releases = plan_releases(pipeline, now_ms)
    write_releases(pipeline, releases)
    return releases.stepped


def plan_releases(pipeline: Pipeline, now_ms: int) -> Releases:
    """`release_due`'s first half: the due messages decided, their records sent; the
    states to write come back. The release timer writes them only once the records are
    acknowledged: a release has no input offset to be replayed from, so a state that
    says "released" must never reach the changelog before the release's decision and
    send request reach Kafka."""
    states = pipeline.states
    releases = Releases()
    for partition in range(pipeline.settings.partitions):
        until = pipeline.releasable_until(partition, now_ms)
        if until < 0 or not states.open(partition):
            continue
        due = states.due_index_keys(partition, until, RELEASE_BATCH)
        if not due:
            continue
        found: dict[bytes, list[bytes]] = {}
        for key in due:
            found.setdefault(parse_index_key(key)[1], []).append(key)
        numbers = list(found)
        planned = releases.writes.setdefault(partition, {})
        for e164, value in zip(numbers, states.read(partition, numbers), strict=True):
            writes: dict[bytes, bytes | None] = {}
            planned[e164] = (value, writes)
            try:
                state = decode_state(value)
            except ValueError:
                log.error("number %s: its stored state cannot be read; its held messages "
                          "cannot be released", pipeline.settings.number_tag(e164))
                writes.update(dict.fromkeys(found[e164]))
                continue
            event = NumberEvent(DUE_EVENT, e164.decode(), until, "", -1, -1)
            try:
                new_state, records = step(state, event)
            except InvalidEvent as exc:  # only a held message a bug made can do this
                log.error("number %s: its held messages cannot be released: %s",
                          pipeline.settings.number_tag(e164), exc)
                writes.update(dict.fromkeys(found[e164]))
                continue
            _send_records(pipeline.outputs.send, e164, records)
            if new_state is not None and new_state != state:
                writes[e164] = encode_state(_dated(new_state, until))
                _held_changes(pipeline, e164, state, new_state, writes)
            # Entries that point at nothing due (left by a crash between writes).
            kept = index_keys(e164, new_state)
            writes.update((key, None) for key in found[e164] if key not in kept)
        releases.stepped += len(numbers)
    return releases


def write_releases(pipeline: Pipeline, releases: Releases) -> None:
    """`release_due`'s second half: the planned states written, except those of numbers
    whose state changed since the plan read it (a bundle for the number came between:
    it released the same messages at the same moments, and its state is the newer)."""
    states = pipeline.states
    for partition, planned in releases.writes.items():
        if not states.open(partition):
            continue  # revoked meanwhile: its next owner releases them
        numbers = list(planned)
        writes: dict[bytes, bytes | None] = {}
        for e164, now in zip(numbers, states.read(partition, numbers), strict=True):
            seen, number_writes = planned[e164]
            if now == seen:
                writes.update(number_writes)
        states.write(partition, writes)


def _held_changes(pipeline: Pipeline, e164: bytes, before: NumberState | None,
                  after: NumberState | None, writes: dict[bytes, bytes | None]) -> None:
    """The release index entries and sms.held records that follow a change of the
    number's held messages."""
    if (before.held if before is not None else ()) == (after.held if after is not None else ()):
        return
    writes.update(index_changes(e164, before, after))
    for key, value in held_records(e164, before, after):
        pipeline.outputs.send(topics.HELD, key, value)


def _cancels_per_number(pipeline: Pipeline, partition: int,
                        events: list[NumberEvent]) -> list[NumberEvent]:
    """Each cancel (for the whole partition) as one event per number that may hold a
    message: those in the release index, and those of the bundle itself."""
    numbers = {parse_index_key(key)[1].decode()
               for key in pipeline.states.due_index_keys(partition, 2**62, 2**31)}
    numbers.update(event.e164 for event in events if event.e164)
    out: list[NumberEvent] = []
    for event in events:
        if event.kind == CANCEL_EVENT and not event.e164:
            out.extend(replace(event, e164=number) for number in sorted(numbers))
        else:
            out.append(event)
    return out


def _send_records(send: Any, key: bytes, records: list[Any]) -> None:
    for record in records:
        if isinstance(record, DecisionRecord):
            send(topics.DECISIONS, key, codecs.DECISION.encode(record.to_dict()))
            count_agent_decision(record.automation_id or "", record.outcome)
        elif isinstance(record, SendRequest):
            send(topics.OUTBOX, key, codecs.SEND_REQUEST.encode(record.to_dict()))
        else:
            send(topics.OPTOUTS, key, codecs.OPT_OUT.encode(record.to_dict()))


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
