"""Held messages in the cooldown agent, in-process: a hold writes the number's state,
its release index entry and a record on sms.held; the release timer's pass finds it by
the index, sends it under the trigger's decision id, and takes both back; a cancel
reaches every number of the partition. Explicit times, no broker."""

from dataclasses import replace

from streams import codecs, topics
from streams.agents import plan_releases, release_due, write_releases
from streams.bundles import encode_bundles, partition_for
from streams.held import INDEX_PREFIX, index_key
from streams.outcomes import CANCELLED, COLLAPSED, DEFERRED_COOLDOWN, HELD_WINDOW, RELEASED
from streams.records import NumberEvent
from streams.rule import decision_id_for
from streams.settings import DEFAULT_PARTITIONS
from streams.state import decode_state

T0 = 1_768_518_000_000  # 2026-01-15T23:00:00Z: past the window, 00:00 in Copenhagen
OPENING = 1_768_546_800_000  # 2026-01-16T07:00:00Z, 08:00 in Copenhagen
HOUR = 3_600_000
KEY = b"+4520123456"
PARTITION = partition_for(KEY, DEFAULT_PARTITIONS)


def trigger(event_id, at_ms, automation_id="welcome", e164=KEY, **changes):
    event = NumberEvent(
        "trigger", e164.decode(), at_ms, topics.TRIGGERS, 0, 1, event_id=event_id,
        decision_id=decision_id_for(event_id, automation_id), automation_id=automation_id,
        text="Hi", sender="ACME", window="daily 08:00-21:00", timezone="Europe/Copenhagen",
        hold_outside_window=True, max_hold_ms=7 * 24 * HOUR)
    return replace(event, **changes)


def bundle(*events, partition=PARTITION):
    (encoded,) = encode_bundles(list(events), 900_000)
    return None, encoded, partition


def held_topic(outputs):
    return [(key, codecs.HELD.decode(value) if value is not None else None)
            for key, value in outputs.by_topic[topics.HELD].raw]


def index_entries(store):
    return sorted(key for key in store if key.startswith(INDEX_PREFIX))


def test_a_held_message_is_indexed_released_at_the_opening_and_unindexed(
        feed, cooldown_agent, pipeline, outputs, store, decisions, outbox):
    event = trigger("evt-1", T0)
    feed(cooldown_agent, [bundle(event)], timestamp_ms=T0)
    assert [d["outcome"] for d in decisions.values] == [HELD_WINDOW]
    assert decisions.values[0]["release_at_ms"] == OPENING
    assert index_entries(store) == [index_key(OPENING, KEY)]
    ((key, held),) = held_topic(outputs)
    assert (key, held["release_at_ms"], held["outcome"]) == (
        event.decision_id.encode(), OPENING, HELD_WINDOW)
    assert outbox.values == []

    assert release_due(pipeline, OPENING - 1) == 0
    assert release_due(pipeline, OPENING + 150) == 1
    pipeline.states.persist()
    assert [d["outcome"] for d in decisions.values] == [HELD_WINDOW, RELEASED]
    ((_, send),) = outbox.records
    assert (send["decision_id"], send["decided_at_ms"]) == (event.decision_id, OPENING)
    assert index_entries(store) == []
    assert held_topic(outputs)[-1] == (event.decision_id.encode(), None)
    assert decode_state(store[KEY]).held == ()
    # Every store write went to the changelog too: recovery brings back the same.
    changelog = outputs.by_topic[topics.changelog_topic(pipeline.settings.app_id)].raw
    assert (index_key(OPENING, KEY), None) in changelog


def test_a_stale_index_entry_is_dropped_and_nothing_not_due_is_released(
        feed, cooldown_agent, pipeline, store, outbox):
    feed(cooldown_agent, [bundle(trigger("evt-1", T0))], timestamp_ms=T0)
    # An index entry whose number holds nothing (a crash between two writes).
    stale = index_key(OPENING - HOUR, b"+4520999999")
    store[stale] = b""
    assert release_due(pipeline, OPENING - 1) == 1
    pipeline.states.persist()
    assert stale not in store
    assert outbox.values == []
    assert release_due(pipeline, OPENING) == 1
    assert len(outbox.values) == 1


def test_three_due_together_give_one_send(feed, cooldown_agent, pipeline, decisions, outbox):
    deferring = {"window": "always", "cooldown_enabled": True, "cooldown_ms": HOUR,
                 "defer_on_cooldown": True, "max_hold_ms": 6 * HOUR}
    sent = NumberEvent("sent", KEY.decode(), T0, topics.SENT, 0, 1, origin="crm", ref="m-1")
    feed(cooldown_agent, [bundle(sent, *(trigger(f"evt-{i}", T0 + i, f"auto-{i}", **deferring)
                                         for i in range(3)))], timestamp_ms=T0)
    assert [d["outcome"] for d in decisions.values] == [DEFERRED_COOLDOWN] * 3
    release_due(pipeline, T0 + HOUR)
    assert [s["automation_id"] for s in outbox.values] == ["auto-2"]
    assert sorted(d["outcome"] for d in decisions.values[3:]) == [
        COLLAPSED, COLLAPSED, DEFERRED_COOLDOWN, DEFERRED_COOLDOWN, RELEASED]


def test_a_cancel_reaches_every_number_of_the_partition(
        feed, cooldown_agent, pipeline, outputs, store, decisions, outbox):
    numbers = [f"+452012{i:04d}".encode() for i in range(40)]
    mine = [n for n in numbers if partition_for(n, DEFAULT_PARTITIONS) == PARTITION][:3]
    feed(cooldown_agent, [bundle(*(trigger(f"evt-{i}", T0, e164=n) for i, n in enumerate(mine)),
                                 trigger("evt-x", T0, "other", e164=mine[0]))],
         timestamp_ms=T0)
    cancel = NumberEvent("cancel", "", T0 + 1, "smscool", -1, -1, automation_id="welcome",
                         origin=CANCELLED)
    feed(cooldown_agent, [bundle(cancel)], timestamp_ms=T0 + 1)
    cancelled = [d for d in decisions.values if d["outcome"] == CANCELLED]
    assert sorted(d["e164"] for d in cancelled) == sorted(n.decode() for n in mine)
    # The other automation's message is still held, and still indexed.
    assert index_entries(store) == [index_key(OPENING, mine[0])]
    assert [h.automation_id for h in decode_state(store[mine[0]]).held] == ["other"]
    release_due(pipeline, OPENING)
    assert [s["automation_id"] for s in outbox.values] == ["other"]


def test_a_release_waits_until_every_input_is_read_up_to_its_time(
        feed, cooldown_agent, pipeline, outbox):
    pipeline.inputs = frozenset({(topics.TRIGGERS, 0), (topics.SENT, 0)})
    feed(cooldown_agent, [bundle(trigger("evt-1", T0))], timestamp_ms=T0)

    def progress(**read_up_to):
        return bundle(*(NumberEvent("progress", "", at_ms, topic, 0, -1)
                        for topic, at_ms in read_up_to.items()))

    assert release_due(pipeline, OPENING + 1000) == 0  # no word from ingest yet
    feed(cooldown_agent, [progress(**{topics.TRIGGERS: OPENING + 500,
                                      topics.SENT: OPENING - 1})], timestamp_ms=T0)
    # An SMS dated before the opening may still be on its way on sms.sent.
    assert release_due(pipeline, OPENING + 1000) == 0
    feed(cooldown_agent, [progress(**{topics.SENT: OPENING})], timestamp_ms=T0)
    assert release_due(pipeline, OPENING + 1000) == 1
    ((_, send),) = outbox.records
    assert send["decided_at_ms"] == OPENING


def test_a_release_reaches_the_changelog_only_after_its_records_and_not_over_a_newer_state(
        feed, cooldown_agent, pipeline, outputs, store, decisions, outbox):
    changelog = outputs.by_topic[topics.changelog_topic(pipeline.settings.app_id)].raw
    feed(cooldown_agent, [bundle(trigger("evt-1", T0), trigger("evt-2", T0, e164=b"+4520123499",
                                                                automation_id="other"))],
         timestamp_ms=T0)
    written = len(changelog)
    releases = plan_releases(pipeline, OPENING + 150)
    # The decisions and send requests are out; no state has been written yet.
    assert [d["outcome"] for d in decisions.values][-1] == RELEASED
    assert len(outbox.values) >= 1 and len(changelog) == written
    # A bundle for one of the numbers comes first: it releases the same message at the
    # same moment, and its state is the one that stays.
    other = b"+4520123499"
    feed(cooldown_agent, [bundle(trigger("evt-3", OPENING + 200, e164=other,
                                         automation_id="other"),
                                 partition=partition_for(other, DEFAULT_PARTITIONS))],
         timestamp_ms=OPENING + 200)
    after_bundle = store[other]
    write_releases(pipeline, releases)
    pipeline.states.persist()
    assert store[other] == after_bundle
    assert decode_state(store[KEY]).held == ()
    assert len(changelog) > written
