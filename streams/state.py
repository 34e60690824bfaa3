"""The value of the `last_sent` table: one number's state, to bytes and back.

Key: the E.164 number. Value: the latest SMS that reached the number (or was reserved
for it) — its time, origin and reference —, the one before it (so that a reservation
the gateway refused can be released), and the decision ids of the number's latest
passes, which make a replayed trigger pass again instead of being reserved twice.
"""

from __future__ import annotations

import json

from streams.rule import LastSend, NumberState


def encode_state(state: NumberState) -> bytes:
    last, previous = state.last, state.previous
    body: dict[str, object] = {"p": list(state.recent_passes)}
    if last is not None:
        body.update(t=last.at_ms, o=last.origin, r=last.ref)
    if previous is not None:
        body["v"] = [previous.at_ms, previous.origin, previous.ref]
    return json.dumps(body, separators=(",", ":")).encode()


def decode_state(data: bytes | None) -> NumberState | None:
    if data is None:
        return None
    body = json.loads(data)
    last = LastSend(body["t"], body["o"], body["r"]) if "t" in body else None
    previous = LastSend(*body["v"]) if "v" in body else None
    return NumberState(last=last, recent_passes=tuple(body["p"]), previous=previous)
