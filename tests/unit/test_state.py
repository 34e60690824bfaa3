"""The `last_sent` table value: `encode_state` and `decode_state` round-trip every state, in
the compact JSON form the changelog holds."""

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
    state = NumberState(LastSend(T0, "welcome", "d-1"), ("d-0", "d-1"))
    assert encode_state(state) == b'{"p":["d-0","d-1"],"t":1767225600000,"o":"welcome","r":"d-1"}'
    assert encode_state(NumberState()) == b'{"p":[]}'
    with_previous = NumberState(LastSend(T0, "a", "d-1"), (), LastSend(T0 - 1, "crm", "m"))
    assert encode_state(with_previous) == (
        b'{"p":[],"t":1767225600000,"o":"a","r":"d-1","v":[1767225599999,"crm","m"]}')
