"""What a number's held messages add beside its state: the release index, and the
records of topic sms.held.

The release index lives in the `last_sent` table itself, under keys that sort by
release time (`INDEX_PREFIX`, the time as 8 big-endian bytes, the E.164 number): the
release timer reads a partition's index from its start up to now, so a tick costs
what is due, not what is held. The index is changelogged like any state and comes
back with it after a lost disk. It only points: the number's state says what is held,
so an index entry left behind by a crash is dropped when the timer finds nothing due.
"""

from __future__ import annotations

import struct
from typing import Any

from streams import codecs
from streams.records import HeldMessage
from streams.rule import Held, NumberState

# E.164 keys start with "+": nothing else in the table starts with a zero byte.
INDEX_PREFIX = b"\x00release\x00"
_TIME = struct.Struct(">Q")


def index_key(release_at_ms: int, e164: bytes) -> bytes:
    return INDEX_PREFIX + _TIME.pack(release_at_ms) + e164


def index_range_end(now_ms: int) -> bytes:
    """The first index key past every entry due at `now_ms`."""
    return INDEX_PREFIX + _TIME.pack(now_ms + 1)


def parse_index_key(key: bytes) -> tuple[int, bytes]:
    """(release time, E.164) of an index key."""
    start = len(INDEX_PREFIX)
    (release_at_ms,) = _TIME.unpack_from(key, start)
    return release_at_ms, key[start + _TIME.size:]


def index_keys(e164: bytes, state: NumberState | None) -> set[bytes]:
    if state is None:
        return set()
    return {index_key(held.release_at_ms, e164) for held in state.held}


def index_changes(e164: bytes, before: NumberState | None,
                  after: NumberState | None) -> dict[bytes, bytes | None]:
    """Index entries to write (value b"") and to delete (None) when the number's state
    goes from `before` to `after`."""
    old, new = index_keys(e164, before), index_keys(e164, after)
    changes: dict[bytes, bytes | None] = dict.fromkeys(old - new)
    changes.update(dict.fromkeys(new - old, b""))
    return changes


def held_records(e164: bytes, before: NumberState | None,
                 after: NumberState | None) -> list[tuple[bytes, bytes | None]]:
    """(key, value) of sms.held for what changed: a record for each message held anew
    or with a new release time, a tombstone for each no longer held."""
    old = {h.decision_id: h for h in before.held} if before is not None else {}
    new = {h.decision_id: h for h in after.held} if after is not None else {}
    number = e164.decode()
    records: list[tuple[bytes, bytes | None]] = [
        (decision_id.encode(), None) for decision_id in old if decision_id not in new]
    for decision_id, held in new.items():
        if old.get(decision_id) != held:
            records.append((decision_id.encode(), encode_held(number, held)))
    return records


def encode_held(e164: str, held: Held) -> bytes:
    return codecs.HELD.encode(HeldMessage(
        decision_id=held.decision_id, event_id=held.event_id,
        automation_id=held.automation_id, e164=e164, outcome=held.reason,
        trigger_at_ms=held.trigger_at_ms, release_at_ms=held.release_at_ms,
        deadline_ms=held.deadline_ms, priority=held.priority).to_dict())


def read_held(bootstrap: str, automation_id: str | None = None) -> list[HeldMessage]:
    """The messages held now, as sms.held says (for the command line), by release time."""
    from streams.kafka import read_records
    from streams.topics import HELD

    held: dict[bytes, HeldMessage] = {}
    for record in read_records(bootstrap, HELD, idle_s=1.0, timeout_s=300):
        if record.key is None:
            continue
        if record.value is None:
            held.pop(record.key, None)
            continue
        message = HeldMessage.from_dict(codecs.HELD.decode(record.value))
        if automation_id is None or message.automation_id == automation_id:
            held[record.key] = message
        else:
            held.pop(record.key, None)
    return sorted(held.values(), key=lambda m: (m.release_at_ms, m.decision_id))


def send_cancel(bootstrap: str, partitions: int, automation_id: str, outcome: str,
                at_ms: int) -> None:
    """Ask every worker to end the automation's messages held up to `at_ms`, each with
    the decision `outcome`: one cancel to each partition of the bundle topic, so it
    reaches the worker that owns the numbers there, in order with their events."""
    from streams.bundles import encode_bundles
    from streams.kafka import NotDelivered, producer
    from streams.records import CANCEL_EVENT, NumberEvent
    from streams.topics import BY_NUMBER

    event = NumberEvent(CANCEL_EVENT, "", at_ms, "smscool", -1, -1,
                        automation_id=automation_id, origin=outcome)
    (value,) = encode_bundles([event], 900_000)
    refused: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            refused.append(err.str())

    # librdkafka gives a record up after the same 30 s that the flush waits.
    out = producer(bootstrap, **{"message.timeout.ms": 30_000})
    for partition in range(partitions):
        out.produce(BY_NUMBER, value, partition=partition, on_delivery=delivered)
    if out.flush(35) != 0 or refused:
        raise NotDelivered(f"{BY_NUMBER}: the cancel was not written to every partition "
                           f"within 30 s ({refused[0] if refused else 'no answer'})")
