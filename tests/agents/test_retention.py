"""Retention in the cooldown agent, in-process: under a stream of new numbers the table
stays bounded by those texted within the horizon; a number that holds a message, or
opted out, is kept (the latter cut down to its opt-out). Explicit times, no broker."""

from dataclasses import replace

from streams import topics
from streams.agents import forget_expired
from streams.bundles import by_partition, encode_bundles
from streams.records import OPT_OUT_EVENT, NumberEvent
from streams.rule import NumberState, OptedOut, decision_id_for, retained
from streams.settings import DEFAULT_PARTITIONS
from streams.state import decode_state

T0 = 1_768_518_000_000  # 2026-01-15T23:00:00Z: 00:00 in Copenhagen
HOUR = 3_600_000
HORIZON = 2 * HOUR  # a cooldown of an hour and a margin of an hour


def trigger(e164, event_id, at_ms, **changes):
    event = NumberEvent(
        "trigger", e164, at_ms, topics.TRIGGERS, 0, 1, event_id=event_id,
        decision_id=decision_id_for(event_id, "welcome"), automation_id="welcome",
        text="Hi", sender="ACME", cooldown_enabled=True, cooldown_ms=HOUR,
        max_hold_ms=7 * 24 * HOUR)
    return replace(event, **changes)


def bundles(events):
    for partition, group in by_partition(events, DEFAULT_PARTITIONS).items():
        for encoded in encode_bundles(group, 900_000):
            yield None, encoded, partition


def numbers_in(store):
    return sorted(key for key in store if key.startswith(b"+"))


def sweep(pipeline, now_ms):
    """Sweep until a whole pass forgets nothing more."""
    while forget_expired(pipeline, now_ms, HORIZON):
        pass


def test_the_table_stays_bounded_under_a_stream_of_new_numbers(
        feed, cooldown_agent, pipeline, store, changelog_records):
    sizes = []
    for hour in range(12):
        now = T0 + hour * HOUR
        events = [trigger(f"+452{hour:02d}{n:05d}", f"e-{hour}-{n}", now) for n in range(200)]
        feed(cooldown_agent, list(bundles(events)), timestamp_ms=now)
        sweep(pipeline, now + HOUR - 1)
        pipeline.states.persist()
        sizes.append(len(numbers_in(store)))
    # 200 new numbers an hour, each texted once: at most the last two hours' are kept.
    assert sizes[:2] == [200, 400] and max(sizes) == 400 and sizes[-1] == 400
    assert {key[4:6] for key in numbers_in(store)} == {b"10", b"11"}
    # Each forgotten state is a tombstone in the changelog.
    assert sum(value is None for key, value in changelog_records.raw
               if key.startswith(b"+")) == 10 * 200


def test_a_number_that_holds_a_message_or_opted_out_is_kept(
        feed, cooldown_agent, pipeline, store):
    held = trigger("+4520000001", "h-1", T0, window="daily 08:00-21:00",
                   timezone="Europe/Copenhagen", hold_outside_window=True)
    opted = NumberEvent(OPT_OUT_EVENT, "+4520000002", T0, topics.OPTOUTS, 0, 2,
                        enabled=True, origin="cli")
    texted = trigger("+4520000002", "t-1", T0, transactional=True)
    feed(cooldown_agent, list(bundles([held, opted, texted])), timestamp_ms=T0)
    sweep(pipeline, T0 + 5 * HOUR)  # the window opens at 07:00 UTC, not yet released
    pipeline.states.persist()
    assert numbers_in(store) == [b"+4520000001", b"+4520000002"]
    assert decode_state(store[b"+4520000001"]).held
    kept = decode_state(store[b"+4520000002"])
    assert replace(kept, updated_at_ms=0) == NumberState(opted_out=OptedOut(T0, "cli"))


def test_a_state_without_a_send_is_dated_by_its_last_write(
        feed, cooldown_agent, pipeline, store):
    # The number's only send was refused: its reservation is released, no send is left.
    texted = trigger("+4520000003", "r-1", T0)
    refused = NumberEvent("release", "+4520000003", T0 + 1000, topics.DELIVERY, 0, 4,
                          decision_id=texted.decision_id, automation_id="welcome")
    feed(cooldown_agent, list(bundles([texted])), timestamp_ms=T0)
    feed(cooldown_agent, list(bundles([refused])), timestamp_ms=T0 + 5000)
    state = decode_state(store[b"+4520000003"])
    assert state.last is None and state.updated_at_ms == T0 + 5000
    sweep(pipeline, T0 + 5000 + HORIZON - 1)
    pipeline.states.persist()
    assert b"+4520000003" in store
    sweep(pipeline, T0 + 5000 + HORIZON)
    pipeline.states.persist()
    assert b"+4520000003" not in store


def test_retained_keeps_the_same_state_while_it_is_needed():
    state = NumberState(opted_out=OptedOut(T0, "cli"))
    assert retained(state, T0 + 100 * HOUR, HORIZON) is state
    assert retained(NumberState(), T0, HORIZON) is None
