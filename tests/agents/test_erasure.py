"""Erasure in the cooldown agent, in-process: the number's state goes (a tombstone in
the changelog), its held messages end (tombstones on sms.held, decisions that no
longer name it), and an opt-out stays under the number's keyed hash only, keeps the
number from being texted, and goes when it opts back in. No broker."""

import uuid
from dataclasses import replace

import pytest

from streams import topics
from streams.bundles import encode_bundles, partition_for
from streams.erasure import opt_out_key
from streams.outcomes import CANCELLED, HELD_WINDOW, OPTED_OUT, PASSED
from streams.records import ERASE_EVENT, OPT_OUT_EVENT, NumberEvent
from streams.rule import decision_id_for
from streams.settings import DEFAULT_PARTITIONS, Settings

T0 = 1_768_518_000_000  # 2026-01-15T23:00:00Z: 00:00 in Copenhagen
HOUR = 3_600_000
KEY = b"+4520123456"
PARTITION = partition_for(KEY, DEFAULT_PARTITIONS)
SECRET = b"number-secret"


@pytest.fixture
def settings():
    return Settings(app_id=f"test-{uuid.uuid4().hex[:12]}", store="memory",
                    partitions=DEFAULT_PARTITIONS, log_hash_key=b"test",
                    number_secret=SECRET)


def trigger(event_id, at_ms, **changes):
    event = NumberEvent(
        "trigger", KEY.decode(), at_ms, topics.TRIGGERS, 0, 1, event_id=event_id,
        decision_id=decision_id_for(event_id, "welcome"), automation_id="welcome",
        text="Hi", sender="ACME", cooldown_enabled=True, cooldown_ms=HOUR,
        max_hold_ms=7 * 24 * HOUR)
    return replace(event, **changes)


def erase(at_ms):
    return NumberEvent(ERASE_EVENT, KEY.decode(), at_ms, topics.ERASURES, 0, 2, origin="cli")


def opt_out(at_ms, opted_out=True):
    return NumberEvent(OPT_OUT_EVENT, KEY.decode(), at_ms, topics.OPTOUTS, 0, 3,
                       enabled=opted_out, origin="cli")


def bundle(*events):
    (encoded,) = encode_bundles(list(events), 900_000)
    return None, encoded, PARTITION


def written_for(changelog_records, key):
    return [value for k, value in changelog_records.raw if k == key]


def test_an_erasure_deletes_the_state_and_ends_held_messages_without_naming_the_number(
        feed, cooldown_agent, store, outputs, decisions, changelog_records):
    held = trigger("evt-1", T0, window="daily 08:00-21:00", timezone="Europe/Copenhagen",
                   hold_outside_window=True)
    feed(cooldown_agent, [bundle(held)], timestamp_ms=T0)
    assert [d["outcome"] for d in decisions.values] == [HELD_WINDOW]
    assert KEY in store
    feed(cooldown_agent, [bundle(erase(T0 + 1000))], timestamp_ms=T0 + 1000)
    assert KEY not in store and not any(KEY in key for key in store)  # nor its index
    assert written_for(changelog_records, KEY)[-1] is None  # the changelog's tombstone
    last = decisions.values[-1]
    assert (last["outcome"], last["e164"], last["event_id"]) == (CANCELLED, None, "evt-1")
    (held_key, held_value) = outputs.by_topic[topics.HELD].raw[-1]
    assert (held_key, held_value) == (held.decision_id.encode(), None)
    # A trigger after it is decided as for a new number.
    feed(cooldown_agent, [bundle(trigger("evt-2", T0 + 2000))], timestamp_ms=T0 + 2000)
    assert decisions.values[-1]["outcome"] == PASSED


def test_an_erased_opt_out_stays_by_the_numbers_hash_only_until_it_opts_back_in(
        feed, cooldown_agent, store, decisions):
    feed(cooldown_agent, [bundle(opt_out(T0), trigger("evt-1", T0 + 1))], timestamp_ms=T0)
    assert decisions.values[-1]["outcome"] == OPTED_OUT
    feed(cooldown_agent, [bundle(erase(T0 + 1000))], timestamp_ms=T0 + 1000)
    hashed = opt_out_key(SECRET, KEY)
    assert KEY not in store and hashed in store
    assert not any(KEY in key or KEY in value for key, value in store.items())
    feed(cooldown_agent, [bundle(trigger("evt-2", T0 + 2000))], timestamp_ms=T0 + 2000)
    assert decisions.values[-1]["outcome"] == OPTED_OUT
    # Erased again: nothing more to forget.
    feed(cooldown_agent, [bundle(erase(T0 + 2500))], timestamp_ms=T0 + 2500)
    assert KEY not in store and hashed in store
    feed(cooldown_agent, [bundle(opt_out(T0 + 3000, opted_out=False),
                                 trigger("evt-3", T0 + 3001))], timestamp_ms=T0 + 3000)
    assert decisions.values[-1]["outcome"] == PASSED
    assert hashed not in store


def test_without_a_secret_an_erased_opt_out_stays_under_the_number(
        feed, cooldown_agent, store, decisions, pipeline):
    pipeline.settings = replace(pipeline.settings, number_secret=b"")
    feed(cooldown_agent, [bundle(opt_out(T0), trigger("evt-1", T0 + 1))], timestamp_ms=T0)
    feed(cooldown_agent, [bundle(erase(T0 + 1000), trigger("evt-2", T0 + 1001))],
         timestamp_ms=T0 + 1000)
    assert KEY in store
    assert [d["outcome"] for d in decisions.values] == [OPTED_OUT, OPTED_OUT]
