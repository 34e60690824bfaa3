"""The `last_sent` table value: `encode_state` and `decode_state` round-trip every state, in
the compact JSON form the changelog holds."""

import json

import pytest

from streams.rule import RECENT_PASSES, LastSend, NumberState
from streams.state import decode_state, encode_state

T0 = 1_767_225_600_000

STATES = [
    NumberState(),
    NumberState(last=None, recent_passes=("d-1",)),
    NumberState(LastSend(T0, "crm", "")),
    NumberState(LastSend(T0, "welcome", "d-1"), ("d-1",)),
    NumberState(LastSend(T0 + 5, "welcome", "d-4"), tuple(f"d-{i}" for i in range(RECENT_PASSES))),
    NumberState(LastSend(0, "système \"x\"", "ref,with:punctuation"), ("a", "b")),
    NumberState(LastSend(T0 + 9, "welcome", "d-9"), ("d-9",), LastSend(T0, "crm", "m-1")),
]


@pytest.mark.parametrize("state", STATES)
def test_round_trip(state):
    assert decode_state(encode_state(state)) == state


def test_full_recent_passes_keep_their_order():
    passes = tuple(f"d-{i}" for i in range(RECENT_PASSES))
    state = decode_state(encode_state(NumberState(LastSend(T0, "welcome", "d-3"), passes)))
    assert state.recent_passes == passes


def test_none_is_no_state():
    assert decode_state(None) is None


def test_encoded_form_is_stable():
    # The changelog holds these bytes; a new form must still read the old one.
    d0, d1 = "0" * 32, "9843a92336ec7dea2772ce8fc5cf1689"
    state = NumberState(LastSend(T0, "welcome", d1), (d0, d1))
    assert encode_state(state) == (
        b"\x01\x05" + T0.to_bytes(8, "big") + b"\x07welcome\xff" + bytes.fromhex(d1)
        + b"\x01\xff" + bytes(16))
    assert encode_state(NumberState()) == b"\x01\x00\x00"


def test_the_common_state_is_small():
    d1 = "9843a92336ec7dea2772ce8fc5cf1689"
    assert len(encode_state(NumberState(LastSend(T0, "cart-reminder", d1), (d1,)))) == 42


@pytest.mark.parametrize("state", STATES)
def test_the_first_form_json_is_still_read(state):
    def send(s):
        return [s.at_ms, s.origin, s.ref]

    body = {"p": list(state.recent_passes)}
    if state.last is not None:
        body.update(t=state.last.at_ms, o=state.last.origin, r=state.last.ref)
    if state.previous is not None:
        body["v"] = send(state.previous)
    assert decode_state(json.dumps(body).encode()) == state


@pytest.mark.parametrize("data", [b"\x02\x00\x00", b"\x01\x01\x00\x00"])
def test_an_unknown_or_cut_value_is_refused(data):
    with pytest.raises(ValueError):
        decode_state(data)


def test_a_string_too_long_for_the_state_is_refused():
    with pytest.raises(ValueError):
        encode_state(NumberState(LastSend(T0, "x" * 300, "m")))
