"""The benchmark's workload and its own contenders' decision loop, without a broker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.workload import (
    AUTOMATION_MIX,
    PERIOD_MS,
    TriggerMaker,
    UniqueNumbers,
    UniqueWorkload,
    bench_automations,
    danish_blocks,
    danish_numbers,
    generate,
    paced_triggers,
    terms_of,
    written,
)
from streams import codecs
from streams.numbers import to_e164
from streams.rule import PASSED, SUPPRESSED_COOLDOWN, decide, decision_id_for
from tests.helpers import Message

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
    messages = [Message("sms.triggers", 0, i, ts, k, v)
                for i, (k, v, ts) in enumerate(work.records)]
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


def test_the_danish_blocks_are_the_valid_four_digit_prefixes():
    import phonenumbers

    blocks = danish_blocks()
    assert len(blocks) == 930 and 2000 not in blocks and 2010 in blocks
    for prefix in (2000, 2009, 2109, 2905):  # not Danish numbers
        assert prefix not in blocks
        assert not phonenumbers.is_valid_number(phonenumbers.parse(f"+45{prefix}1234"))


def test_unique_numbers_are_distinct_valid_and_invertible():
    import random

    import phonenumbers

    numbers = UniqueNumbers(200_000, seed=3)
    assert len(numbers) == 200_000
    every = [numbers[i] for i in range(len(numbers))]
    assert len(set(every)) == len(every)
    assert all(e164.startswith("+452") and len(e164) == 11 for e164 in every)
    rng = random.Random(1)
    for i in rng.sample(range(len(numbers)), 300):
        e164 = numbers[i]
        assert phonenumbers.is_valid_number(phonenumbers.parse(e164))
        assert numbers.index(e164) == i
    # Consecutive numbers lie far apart (no run of neighbours on one prefix).
    assert len({e164[:7] for e164 in every[:100]}) > 90


def test_unique_numbers_reach_a_million_and_refuse_too_many():
    numbers = UniqueNumbers(1_000_000, seed=1)
    assert numbers.index(numbers[999_999]) == 999_999
    assert numbers.index(numbers[0]) == 0
    with pytest.raises(IndexError):
        numbers[1_000_000]
    with pytest.raises(ValueError):
        UniqueNumbers(numbers.space + 1, seed=1)
    with pytest.raises(ValueError):
        UniqueNumbers(0, seed=1)


def test_a_number_not_of_the_set_has_no_index():
    numbers = UniqueNumbers(10, seed=2)
    others = [e164 for e164 in (UniqueNumbers(5_000, seed=2)[i] for i in range(5_000))
              if e164 not in {numbers[i] for i in range(10)}]
    assert all(numbers.index(e164) is None for e164 in others)
    for bad in ("+4520001234", "+4630123456", "+45201234567", "20123456", "+45abcdefgh"):
        assert numbers.index(bad) is None


def test_unique_numbers_depend_on_the_seed_only():
    a, b, c = UniqueNumbers(50, seed=4), UniqueNumbers(50, seed=4), UniqueNumbers(50, seed=5)
    assert [a[i] for i in range(50)] == [b[i] for i in range(50)]
    assert [a[i] for i in range(50)] != [c[i] for i in range(50)]


def test_the_unique_workload_gives_each_trigger_a_number_of_its_own():
    work = UniqueWorkload.make(3000, seed=6, end_ms=END_MS)
    records = list(work.records())
    assert len(records) == work.count == 3000
    assert len({key for key, _, _ in records}) == 3000
    times = [ts for _, _, ts in records]
    assert times == sorted(times) and len(set(times)) == 3000
    assert END_MS - PERIOD_MS == times[0] and times[-1] < END_MS
    for i, (key, value, ts) in enumerate(records):
        trigger = codecs.TRIGGER.decode(value)
        assert key.decode() == work.numbers[i] == to_e164(trigger["phone"], "DK")
        assert trigger["event_id"] == work.event_id(i) and work.index_of_event(
            trigger["event_id"]) == i
        assert trigger["event_type"] == AUTOMATION_MIX[work.kind(i)][1]
        assert ts - 2000 < trigger["occurred_at_ms"] <= ts
    assert work.expected_outcomes == Counter({PASSED: 3000})


def test_the_unique_workload_draws_automations_in_their_shares():
    work = UniqueWorkload.make(100_000, seed=1, end_ms=END_MS)
    kinds = Counter(work.kind(i) for i in range(work.count))
    for kind, (*_, share) in enumerate(AUTOMATION_MIX):
        assert abs(kinds[kind] / work.count - share / 100) < 0.01


def test_a_slice_of_the_unique_workload_is_the_same_triggers():
    work = UniqueWorkload.make(100, seed=2, end_ms=END_MS)
    whole = list(work.records())
    part = list(work.records(40, 60))
    assert [(k, ts) for k, _, ts in part] == [(k, ts) for k, _, ts in whole[40:60]]
    ids = [codecs.TRIGGER.decode(v)["event_id"] for _, v, _ in part]
    assert ids == [work.event_id(i) for i in range(40, 60)]
    assert list(work.records(99)) and not list(work.records(100))


def test_every_unique_trigger_passes_and_leaves_the_state_of_one_pass():
    work = UniqueWorkload.make(500, seed=3, end_ms=END_MS)
    terms = [terms_of(a) for a in work.automations]
    states = {}
    for key, value, ts in work.records():
        trigger = codecs.TRIGGER.decode(value)
        kind = next(k for k, mix in enumerate(AUTOMATION_MIX)
                    if mix[1] == trigger["event_type"])
        decision, state = decide(decision_id_for(trigger["event_id"], terms[kind].automation_id),
                                 terms[kind], states.get(key), ts)
        assert decision.outcome == PASSED
        states[key] = state
    for i in (0, 17, 499):
        assert work.state_of(i) == states[work.numbers[i].encode()]
        assert work.state_of(i).last.at_ms == work.timestamp(i)


def test_the_unique_workloads_last_number_holds_back_a_24h_probe():
    work = UniqueWorkload.make(1000, seed=1, end_ms=END_MS)
    kind = next(k for k, mix in enumerate(AUTOMATION_MIX) if mix[0] == "cooldown-24h")
    terms = terms_of(work.automations[kind])
    probe_at = END_MS + 3_600_000
    decision, _ = decide(decision_id_for("probe", terms.automation_id), terms,
                         work.state_of(work.count - 1), probe_at)
    assert decision.outcome == SUPPRESSED_COOLDOWN
    # The first number's pass lies two days back: a 24 h cooldown no longer holds it.
    decision, _ = decide(decision_id_for("probe", terms.automation_id), terms,
                         work.state_of(0), probe_at)
    assert decision.outcome == PASSED


def test_index_of_event_refuses_other_events():
    work = UniqueWorkload.make(10, seed=7, end_ms=END_MS)
    assert work.index_of_event("s7-0000009") == 9
    for other in ("s7-0000010", "s8-0000001", "r7-state-probe", "s7-x", "b7-0000001"):
        assert work.index_of_event(other) is None
