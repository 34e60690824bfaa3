"""The value of the `last_sent` table: one number's state, to bytes and back.

Key: the E.164 number. Value: the latest SMS that reached the number (or was reserved
for it) — its time, origin and reference —, the one before it (so that a reservation
the gateway refused can be released), and the decision ids of the number's latest
passes, which make a replayed trigger pass again instead of being reserved twice.

A million numbers live in this table, so the form is compact binary: a version byte,
a flags byte, then the sends (time as 8 bytes, origin and reference as short strings,
a decision id as its 16 raw bytes) and the passes (16 bytes each; the newest one is
left out when it is the latest send's reference, as it mostly is). A number with held
messages has them after the passes (with the ids of its finished ones), flagged, so a
number without any costs nothing more; so do a number's opt-out (its time and
channel) and its sends refused in a row (their decision ids), last. The changelog may
still hold the first form, JSON, which starts with `{`: it is read as well.
"""

from __future__ import annotations

import json
import re
import struct

from streams.outcomes import DEFERRED_COOLDOWN, HELD_WINDOW
from streams.rule import Held, LastSend, NumberState, OptedOut

# Version 2 has a second flags byte, for what few states carry: a state without any of
# it is written in version 1 (one flags byte), and both are read.
_VERSION = 2
_HAS_EXPIRED, _HAS_UPDATED = 1, 2  # the second flags byte
_HAS_LAST, _HAS_PREVIOUS, _NEWEST_PASS_IS_LAST, _HAS_HELD, _HAS_FINISHED = 1, 2, 4, 8, 16
_HAS_OPTED_OUT, _HAS_FAILED = 32, 64
_DECISION_ID = re.compile(r"[0-9a-f]{32}")
_TIME = struct.Struct(">q")
# A held message's numbers: trigger, release and deadline times, cooldown, source
# offset, priority, source partition, and a flags byte (its reason and terms).
_HELD_NUMBERS = struct.Struct(">qqqqqiiB")
_DEFERRED, _DEFER_ON_COOLDOWN, _HOLD_OUTSIDE_WINDOW, _TRANSACTIONAL = 1, 2, 4, 8
_LENGTH = struct.Struct(">H")


def _put_ref(out: bytearray, ref: str) -> None:
    # Decision ids (32 hex digits) take 16 bytes; anything else is a short string.
    if _DECISION_ID.fullmatch(ref):
        out.append(0xFF)
        out += bytes.fromhex(ref)
    else:
        _put_text(out, ref)


def _put_refs(out: bytearray, refs: tuple[str, ...]) -> None:
    out.append(len(refs))
    for ref in refs:
        _put_ref(out, ref)


def _put_text(out: bytearray, text: str) -> None:
    data = text.encode()
    if len(data) >= 0xFF:
        raise ValueError(f"a state string of {len(data)} bytes is too long")
    out.append(len(data))
    out += data


def _put_send(out: bytearray, send: LastSend) -> None:
    out += _TIME.pack(send.at_ms)
    _put_text(out, send.origin)
    _put_ref(out, send.ref)


def encode_state(state: NumberState) -> bytes:
    flags = 0
    passes = state.recent_passes
    if state.last is not None:
        flags |= _HAS_LAST
        if passes and passes[-1] == state.last.ref:
            flags |= _NEWEST_PASS_IS_LAST
            passes = passes[:-1]
    if state.previous is not None:
        flags |= _HAS_PREVIOUS
    out = bytearray((_VERSION, flags, 0) if state.expired or state.updated_at_ms
                    else (1, flags))
    if state.last is not None:
        _put_send(out, state.last)
    if state.previous is not None:
        _put_send(out, state.previous)
    _put_refs(out, passes)
    if state.finished:
        out[1] |= _HAS_FINISHED
        _put_refs(out, state.finished)
    if state.held:
        out[1] |= _HAS_HELD
        out.append(len(state.held))
        for held in state.held:
            _put_held(out, held)
    if state.opted_out is not None:
        out[1] |= _HAS_OPTED_OUT
        out += _TIME.pack(state.opted_out.at_ms)
        _put_text(out, state.opted_out.channel)
    if state.failed_in_a_row:
        out[1] |= _HAS_FAILED
        _put_refs(out, state.failed_in_a_row)
    if state.expired:
        out[2] |= _HAS_EXPIRED  # version 2
        _put_refs(out, state.expired)
    if state.updated_at_ms:
        out[2] |= _HAS_UPDATED
        out += _TIME.pack(state.updated_at_ms)
    return bytes(out)


def _put_long_text(out: bytearray, text: str) -> None:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"a held message's string of {len(data)} bytes is too long")
    out += _LENGTH.pack(len(data))
    out += data


def _put_held(out: bytearray, held: Held) -> None:
    flags = ((_DEFERRED if held.reason == DEFERRED_COOLDOWN else 0)
             | (_DEFER_ON_COOLDOWN if held.defer_on_cooldown else 0)
             | (_HOLD_OUTSIDE_WINDOW if held.hold_outside_window else 0)
             | (_TRANSACTIONAL if held.transactional else 0))
    out += _HELD_NUMBERS.pack(held.trigger_at_ms, held.release_at_ms, held.deadline_ms,
                              held.cooldown_ms, held.source_offset, held.priority,
                              held.source_partition, flags)
    _put_ref(out, held.decision_id)
    for text in (held.event_id, held.automation_id, held.text, held.sender, held.window,
                 held.timezone, held.source_topic):
        _put_long_text(out, text)


def decode_state(data: bytes | None) -> NumberState | None:
    if data is None:
        return None
    if data[:1] == b"{":
        return _decode_json(data)
    if data[0] not in (1, _VERSION):
        raise ValueError(f"unknown state version {data[0]}")
    try:
        flags = data[1]
        more = data[2] if data[0] == _VERSION else 0
        at = 3 if data[0] == _VERSION else 2
        last = previous = None
        if flags & _HAS_LAST:
            last, at = _send_at(data, at)
        if flags & _HAS_PREVIOUS:
            previous, at = _send_at(data, at)
        passes, at = _refs_at(data, at)
        finished: list[str] = []
        held: list[Held] = []
        if flags & _HAS_FINISHED:
            finished, at = _refs_at(data, at)
        if flags & _HAS_HELD:
            count = data[at]
            at += 1
            for _ in range(count):
                one, at = _held_at(data, at)
                held.append(one)
        opted_out = None
        if flags & _HAS_OPTED_OUT:
            (since,) = _TIME.unpack_from(data, at)
            length = data[at + 8]
            opted_out = OptedOut(since, _text(data, at + 9, length))
            at += 9 + length
        failed: list[str] = []
        if flags & _HAS_FAILED:
            failed, at = _refs_at(data, at)
        expired: list[str] = []
        if more & _HAS_EXPIRED:
            expired, at = _refs_at(data, at)
        updated_at_ms = 0
        if more & _HAS_UPDATED:
            (updated_at_ms,) = _TIME.unpack_from(data, at)
    except (IndexError, struct.error, UnicodeDecodeError):
        raise ValueError("state value cut short") from None
    if flags & _NEWEST_PASS_IS_LAST and last is not None:
        passes.append(last.ref)
    return NumberState(last=last, recent_passes=tuple(passes), previous=previous,
                       held=tuple(held), finished=tuple(finished), opted_out=opted_out,
                       failed_in_a_row=tuple(failed), expired=tuple(expired),
                       updated_at_ms=updated_at_ms)


# Each reader takes the value at `at` and returns it with the offset after it; a value
# cut short raises IndexError or struct.error.


def _send_at(data: bytes, at: int) -> tuple[LastSend, int]:
    (at_ms,) = _TIME.unpack_from(data, at)
    length = data[at + 8]
    origin = _text(data, at + 9, length)
    ref, at = _ref_at(data, at + 9 + length)
    return LastSend(at_ms, origin, ref), at


def _refs_at(data: bytes, at: int) -> tuple[list[str], int]:
    count = data[at]
    at += 1
    refs = []
    for _ in range(count):
        ref, at = _ref_at(data, at)
        refs.append(ref)
    return refs, at


def _held_at(data: bytes, at: int) -> tuple[Held, int]:
    (trigger_at, release_at, deadline, cooldown, offset, priority, partition,
     flags) = _HELD_NUMBERS.unpack_from(data, at)
    decision_id, at = _ref_at(data, at + _HELD_NUMBERS.size)
    texts = []
    for _ in range(7):
        (length,) = _LENGTH.unpack_from(data, at)
        texts.append(_text(data, at + 2, length))
        at += 2 + length
    event_id, automation_id, text, sender, window, timezone, source_topic = texts
    return Held(
        decision_id=decision_id, event_id=event_id, automation_id=automation_id,
        text=text, sender=sender,
        reason=DEFERRED_COOLDOWN if flags & _DEFERRED else HELD_WINDOW,
        trigger_at_ms=trigger_at, release_at_ms=release_at, deadline_ms=deadline,
        priority=priority, cooldown_ms=cooldown,
        defer_on_cooldown=bool(flags & _DEFER_ON_COOLDOWN),
        hold_outside_window=bool(flags & _HOLD_OUTSIDE_WINDOW),
        window=window, timezone=timezone, source_topic=source_topic,
        source_partition=partition, source_offset=offset,
        transactional=bool(flags & _TRANSACTIONAL),
    ), at


def _ref_at(data: bytes, at: int) -> tuple[str, int]:
    length = data[at]
    if length == 0xFF:
        end = at + 17
        if end > len(data):
            raise IndexError(at)
        return data[at + 1:end].hex(), end
    return _text(data, at + 1, length), at + 1 + length


def _text(data: bytes, at: int, length: int) -> str:
    if at + length > len(data):
        raise IndexError(at)
    return data[at:at + length].decode()


def _decode_json(data: bytes) -> NumberState:
    body = json.loads(data)
    last = LastSend(body["t"], body["o"], body["r"]) if "t" in body else None
    previous = LastSend(*body["v"]) if "v" in body else None
    return NumberState(last=last, recent_passes=tuple(body["p"]), previous=previous)
