"""The benchmark's workload and its own contenders' decision loop, without a broker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.workload import (
    AUTOMATION_MIX,
    PERIOD_MS,
    TriggerMaker,
    bench_automations,
    danish_numbers,
    generate,
    paced_triggers,
    written,
)
from streams import codecs
from streams.numbers import to_e164

END_MS = 1_767_225_600_000


def test_every_way_of_writing_a_number_normalizes_to_it():
    import random

    rng = random.Random(3)
    for e164 in danish_numbers(rng, 50):
        for _ in range(10):
            assert to_e164(written(e164, rng), "DK") == e164


def test_automations_answer_one_event_type_each_with_the_window_always():
    automations = bench_automations()
    assert len({a.event_type for a in automations}) == len(automations) == len(AUTOMATION_MIX)
    assert all(a.window == "always" for a in automations)
    assert sorted(a.cooldown_ms for a in automations) == [0, 3_600_000, 21_600_000, 86_400_000]


def test_the_workload_is_reproducible_and_in_time_order():
    first = generate(2000, 300, seed=5, end_ms=END_MS)
    again = generate(2000, 300, seed=5, end_ms=END_MS)
    assert first.records == again.records
    times = [ts for _, _, ts in first.records]
    assert times == sorted(times)
    assert END_MS - PERIOD_MS <= times[0] and times[-1] < END_MS
    assert first.distinct_numbers == len({key for key, _, _ in first.records}) <= 300


def test_the_workload_is_keyed_by_e164_and_has_both_outcomes_and_hot_numbers():
    work = generate(5000, 1000, seed=2, end_ms=END_MS)
    for key, value, _ in work.records[:200]:
        trigger = codecs.TRIGGER.decode(value)
        assert to_e164(trigger["phone"], "DK") == key.decode()
        assert trigger["occurred_at_ms"] <= END_MS
    assert set(work.expected_outcomes) == {"passed", "suppressed_cooldown"}
    assert sum(work.expected_outcomes.values()) == 5000
    hits = Counter(key for key, _, _ in work.records).most_common()
    assert hits[0][1] > 20 * (5000 / 1000)  # Zipf: the hottest number is far above the mean


def test_paced_triggers_are_new_events_for_the_same_numbers():
    work = generate(100, 50, seed=1, end_ms=END_MS)
    paced = paced_triggers(work, 20, seed=9, occurred_at_ms=END_MS)
    assert len(paced) == 20
    numbers = set(work.numbers)
    for key, value in paced:
        trigger = codecs.TRIGGER.decode(value)
        assert key.decode() in numbers and trigger["event_id"].startswith("p9-")


def test_the_trigger_maker_draws_valid_indexes():
    maker = TriggerMaker(["+4520000000", "+4521000000"], seed=1)
    for _ in range(1000):
        rank, kind = maker.draw()
        assert 0 <= rank < 2 and 0 <= kind < len(AUTOMATION_MIX)


class _Message:
    def __init__(self, key: bytes, value: bytes, ts: int, offset: int) -> None:
        self._key, self._value, self._ts, self._offset = key, value, ts, offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts

    def topic(self) -> str:
        return "sms.triggers"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _Producer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, **_: object) -> None:
        self.records.append((topic, key, value))


@pytest.mark.parametrize("batch", [1, 7, 5000])
def test_the_plain_loop_decides_like_the_rule_over_the_input(tmp_path: Path, batch: int):
    from rocksdict import Options, Rdict

    from bench.plain_confluent import decide_batch

    work = generate(3000, 400, seed=4, end_ms=END_MS)
    messages = [_Message(k, v, ts, i) for i, (k, v, ts) in enumerate(work.records)]
    out = _Producer()
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        for start in range(0, len(messages), batch):
            decide_batch(messages[start:start + batch], db, out, "d", "o", "c")
    finally:
        db.close()
    decisions = [codecs.DECISION.decode(v) for t, _, v in out.records if t == "d"]
    assert Counter(d["outcome"] for d in decisions) == work.expected_outcomes
    assert {d["event_id"] for d in decisions if d["outcome"] == "passed"} == work.expected_passed
    sends = [codecs.SEND_REQUEST.decode(v) for t, _, v in out.records if t == "o"]
    assert len(sends) == len(work.expected_passed)
    assert all(s["text"].startswith("Hi Kunde ") for s in sends)


def test_the_textbook_codec_turns_avro_into_the_trigger_record():
    from bench.textbook_faust import Trigger, triggers

    work = generate(10, 5, seed=1, end_ms=END_MS)
    key, value, _ = work.records[0]
    # Faust's own path from the message's bytes to the agent's value.
    record = triggers.app.serializers.loads_value(
        triggers.value_type, value, serializer=triggers.value_serializer)
    assert isinstance(record, Trigger)
    assert to_e164(record.phone, "DK") == key.decode()
    assert record.attributes["name"].startswith("Kunde ")


def test_the_textbook_state_is_json_of_its_own_and_round_trips():
    from bench.textbook_faust import decode_state, encode_state
    from streams.rule import LastSend, NumberState

    state = NumberState(LastSend(END_MS, "cooldown-1h", "a" * 32), ("a" * 32,),
                        LastSend(END_MS - 5, "cooldown-6h", "b" * 32))
    data = encode_state(state)
    assert data.startswith(b"{")
    assert decode_state(data) == state
    assert decode_state(None) is None
