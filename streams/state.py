"""The value of the `last_sent` table: one number's state, to bytes and back.

Key: the E.164 number. Value: the latest SMS that reached the number (or was reserved
for it) — its time, origin and reference —, the one before it (so that a reservation
the gateway refused can be released), and the decision ids of the number's latest
passes, which make a replayed trigger pass again instead of being reserved twice.

A million numbers live in this table, so the form is compact binary: a version byte,
a flags byte, then the sends (time as 8 bytes, origin and reference as short strings,
a decision id as its 16 raw bytes) and the passes (16 bytes each; the newest one is
left out when it is the latest send's reference, as it mostly is). The changelog may
still hold the first form, JSON, which starts with `{`: it is read as well.
"""

from __future__ import annotations

import json
import re
import struct

from streams.rule import LastSend, NumberState

_VERSION = 1
_HAS_LAST, _HAS_PREVIOUS, _NEWEST_PASS_IS_LAST = 1, 2, 4
_DECISION_ID = re.compile(r"[0-9a-f]{32}")
_TIME = struct.Struct(">q")


def _put_ref(out: bytearray, ref: str) -> None:
    # Decision ids (32 hex digits) take 16 bytes; anything else is a short string.
    if _DECISION_ID.fullmatch(ref):
        out.append(0xFF)
        out += bytes.fromhex(ref)
    else:
        _put_text(out, ref)


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
    out = bytearray((_VERSION, flags))
    if state.last is not None:
        _put_send(out, state.last)
    if state.previous is not None:
        _put_send(out, state.previous)
    out.append(len(passes))
    for decision_id in passes:
        _put_ref(out, decision_id)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def byte(self) -> int:
        return self.take(1)[0]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        if len(chunk) != n:
            raise ValueError("state value cut short")
        self.at += n
        return chunk

    def text(self, length: int) -> str:
        return self.take(length).decode()

    def ref(self) -> str:
        length = self.byte()
        return self.take(16).hex() if length == 0xFF else self.text(length)

    def send(self) -> LastSend:
        (at_ms,) = _TIME.unpack(self.take(8))
        origin = self.text(self.byte())
        return LastSend(at_ms, origin, self.ref())


def decode_state(data: bytes | None) -> NumberState | None:
    if data is None:
        return None
    if data[:1] == b"{":
        return _decode_json(data)
    if data[0] != _VERSION:
        raise ValueError(f"unknown state version {data[0]}")
    reader = _Reader(data, 1)
    flags = reader.byte()
    last = reader.send() if flags & _HAS_LAST else None
    previous = reader.send() if flags & _HAS_PREVIOUS else None
    passes = tuple(reader.ref() for _ in range(reader.byte()))
    if flags & _NEWEST_PASS_IS_LAST and last is not None:
        passes += (last.ref,)
    return NumberState(last=last, recent_passes=passes, previous=previous)


def _decode_json(data: bytes) -> NumberState:
    body = json.loads(data)
    last = LastSend(body["t"], body["o"], body["r"]) if "t" in body else None
    previous = LastSend(*body["v"]) if "v" in body else None
    return NumberState(last=last, recent_passes=tuple(body["p"]), previous=previous)
