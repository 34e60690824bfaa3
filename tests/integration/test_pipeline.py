"""The pipeline end to end: the embedded broker, real `smscool worker` processes with
the RocksDB store, and the demo's scenario checked against an independent model."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest
from rocksdict import AccessType, Options, Rdict

from bench.workload import danish_numbers
from smscool.scenario import Scenario, scenario
from streams import codecs, topics
from streams.automations import publish_automation
from streams.bundles import events_seen
from streams.kafka import iter_records, produce_all, producer, wait_for
from streams.rule import LastSend, NumberState
from streams.state import decode_state, encode_state
from tests.helpers import (
    APP_ID,
    BAD_AUTOMATIONS,
    PARTITIONS,
    decisions_by_event,
    now_ms,
    trigger,
    worker_logs,
)
from tests.integration.model import CooldownModel, decision_id, read_sent

pytestmark = pytest.mark.integration


def expected_outcomes(sc: Scenario) -> tuple[CooldownModel, dict[str, object], int]:
    """The model's answer for every trigger, and how many must be dead-lettered. The
    model decides each trigger once: the scenarios here are made with `holding=False`
    (held messages have tests of their own, test_holds.py)."""
    model = CooldownModel([a.to_record() for a in sc.automations])
    for _, value, _ in sc.sends:
        sent = read_sent(value)
        model.sent(sent["phone"], sent["sent_at_ms"])
    expected: dict[str, object] = {}
    dead = 0
    for event_id, (_, value, at) in zip(sc.event_ids, sc.triggers, strict=True):
        outcome = model.trigger(value, at)
        if outcome is None:
            dead += 1
        else:
            expected[event_id] = outcome
    return model, expected, dead


def feed(bootstrap: str, sc: Scenario) -> None:
    for automation in sc.automations:
        publish_automation(bootstrap, automation)
    produce_all(producer(bootstrap), topics.SENT, sc.sends)
    # Outside sends first, and waited for: then every trigger is decided knowing them,
    # whatever the order of partitions.
    wait_for(bootstrap, topics.BY_NUMBER, events_seen(len(sc.sends)), 90)
    produce_all(producer(bootstrap), topics.TRIGGERS, sc.triggers)


def outbox(bootstrap: str) -> list[dict]:
    return [codecs.SEND_REQUEST.decode(r.value)
            for r in iter_records(bootstrap, topics.OUTBOX, idle_s=1.0)]


def assert_matches_model(by_event: dict[str, list[dict]], expected: dict[str, object]) -> None:
    assert set(by_event) == set(expected)
    wrong = []
    for event_id, want in expected.items():
        for d in by_event[event_id]:
            got = (d["outcome"], d["e164"], d["automation_id"])
            if got != (want.outcome, want.e164, want.automation_id):
                wrong.append((event_id, got, want))
    assert not wrong, f"{len(wrong)} decisions differ from the model, e.g. {wrong[:5]}"


def assert_no_double_send(sends: list[dict], sc: Scenario) -> None:
    """No number got two SMS within the interval of an automation with cooldown."""
    interval = {a.automation_id: a.cooldown_ms for a in sc.automations if a.cooldown_enabled}
    by_number: dict[str, list[dict]] = defaultdict(list)
    for s in {s["decision_id"]: s for s in sends}.values():
        by_number[s["e164"]].append(s)
    for items in by_number.values():
        items.sort(key=lambda s: s["decided_at_ms"])
        for earlier, later in zip(items, items[1:], strict=False):
            gap = later["decided_at_ms"] - earlier["decided_at_ms"]
            cooldown = interval.get(later["automation_id"], 0)
            assert gap >= cooldown, (later["decision_id"], gap, cooldown)


def table_contents(data_dir: Path) -> dict[bytes, NumberState]:
    """The `last_sent` table as the worker left it in RocksDB."""
    contents: dict[bytes, NumberState] = {}
    paths = sorted(data_dir.glob(f"**/{topics.LAST_SENT_TABLE}-*.db"))
    assert paths, f"no RocksDB files of {topics.LAST_SENT_TABLE} under {data_dir}"
    for path in paths:
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if not bytes(key).startswith(b"__faust"):  # Faust's own offset bookkeeping
                    contents[bytes(key)] = decode_state(bytes(value))
        finally:
            db.close()
    return contents


def test_demo_scenario_matches_the_reference_model(bootstrap, start_worker, tmp_path):
    sc = scenario(seed=11, n_triggers=3000, n_numbers=800, end_ms=now_ms(),
                  holding=False)
    model, expected, dead = expected_outcomes(sc)
    # The scenario must exercise every path, or the comparison proves little.
    outcomes = {e.outcome for e in expected.values()}
    assert {"passed", "suppressed_cooldown", "automation_disabled", "invalid_number",
            "unknown_automation", "no_matching_automation"} <= outcomes

    worker = start_worker()
    feed(bootstrap, sc)
    try:
        by_event = decisions_by_event(bootstrap, len(expected), timeout_s=180)
    except TimeoutError:
        pytest.fail(f"not every trigger was decided\n{worker_logs(tmp_path)}")
    assert_matches_model(by_event, expected)
    assert all(len(ds) == 1 for ds in by_event.values()), "a trigger was decided twice"

    passed = {decision_id(e, x.automation_id) for e, x in expected.items() if x.outcome == "passed"}
    sends = outbox(bootstrap)
    assert sorted(s["decision_id"] for s in sends) == sorted(passed)
    assert_no_double_send(sends, sc)
    suppressed = [ds[0] for ds in by_event.values() if ds[0]["outcome"] == "suppressed_cooldown"]
    assert all(d["cause_origin"] and d["cause_at_ms"] <= d["decided_at_ms"] for d in suppressed)

    dead_letters = [codecs.DEAD_LETTER.decode(r.value)
                    for r in iter_records(bootstrap, topics.DEADLETTER, idle_s=1.0)]
    assert len(dead_letters) == dead
    assert {d["reason"] for d in dead_letters} <= {"undecodable", "invalid_record"}

    worker.stop()
    assert not worker.alive()
    table = table_contents(worker.data_dir)
    assert {k.decode(): v.last.at_ms for k, v in table.items()} == model.last


def test_kill_and_lost_data_folder_lose_nothing_and_send_nothing_twice(
        bootstrap, start_worker, tmp_path):
    sc = scenario(seed=23, n_triggers=8000, n_numbers=2000, end_ms=now_ms(),
                  holding=False)
    _, expected, _ = expected_outcomes(sc)
    data_dir = tmp_path / "state"
    first = start_worker(data_dir=data_dir)
    feed(bootstrap, sc)
    # Let it get well into the stream, then kill it without warning.
    decisions_so_far = wait_for(bootstrap, topics.DECISIONS, lambda rs: len(rs) >= 2500, 180)
    first.kill()
    shutil.rmtree(data_dir)
    killed_after = len(decisions_so_far)
    assert killed_after < len(expected), "the worker finished before it could be killed"

    start_worker(data_dir=data_dir)
    try:
        by_event = decisions_by_event(bootstrap, len(expected), timeout_s=240)
    except TimeoutError:
        pytest.fail(f"triggers lost after the kill\n{worker_logs(tmp_path)}")
    # Every trigger decided, and any trigger decided twice (a replay) decided the same.
    assert_matches_model(by_event, expected)
    for event_id, ds in by_event.items():
        assert len({d["decision_id"] for d in ds}) == 1, event_id

    sends = outbox(bootstrap)
    passed = {decision_id(e, x.automation_id) for e, x in expected.items() if x.outcome == "passed"}
    assert {s["decision_id"] for s in sends} == passed
    assert_no_double_send(sends, sc)


def test_a_worker_without_its_data_folder_rebuilds_the_whole_changelog(
        bootstrap, start_worker, tmp_path):
    # The state of 2,000 numbers, each sent an SMS a minute ago, written to the changelog
    # in multi-record batches as a busy worker would (the embedded broker then lists an
    # end offset short of the last batch's end). A worker with an empty data folder
    # rebuilds the table from it, must keep every one of them in cooldown, and must
    # decide every trigger, also those it fetched while it rebuilt.
    welcome = BAD_AUTOMATIONS[0]
    publish_automation(bootstrap, welcome)
    phones = danish_numbers(random.Random(7), 2000)
    sent_at = now_ms() - 60_000
    states = [(phone.encode(),
               encode_state(NumberState(LastSend(sent_at, "crm-campaigns", f"m-{i}"))),
               sent_at) for i, phone in enumerate(phones)]
    with_batches = producer(bootstrap, **{"linger.ms": 200})
    for start in range(0, len(states), 100):
        produce_all(with_batches, topics.changelog_topic(APP_ID), states[start:start + 100],
                    timeout_s=30)

    # The triggers wait for the worker: it fetches them while it rebuilds the table.
    at = now_ms()
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(phone.encode(), codecs.TRIGGER.encode(trigger(f"t-{i}", phone, at)), at)
                 for i, phone in enumerate(phones)])
    worker = start_worker(data_dir=tmp_path / "state")
    by_event = decisions_by_event(bootstrap, len(phones), timeout_s=180)
    passed = sorted(e for e, ds in by_event.items() if ds[-1]["outcome"] == "passed")
    assert not passed, (
        f"{len(passed)} of {len(phones)} numbers passed within the hour of their last SMS, "
        f"e.g. {passed[:5]}\n{worker_logs(tmp_path)}")
    # The changelog was read in batches (streams.faust_patches.read_changelogs_in_batches),
    # not record by record through Faust's stream.
    assert "into the table: up to offsets" in worker.log_tail(100_000)


def test_the_store_keeps_its_changelog_offsets_and_a_new_worker_rebuilds_what_it_wrote(
        bootstrap, start_worker, tmp_path):
    # A worker decides triggers for 400 new numbers: it writes each number's state to
    # its stores and, with the same bytes, to the changelog, and keeps in each store
    # how far its changelog partition is, so a restart reads only what comes after.
    # Then its data folder is lost: a new worker rebuilds the table from those
    # changelog records alone, and keeps every number in cooldown.
    welcome = BAD_AUTOMATIONS[0]
    publish_automation(bootstrap, welcome)
    phones = danish_numbers(random.Random(11), 400)
    at = now_ms()
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(None, codecs.TRIGGER.encode(trigger(f"a-{i}", phone, at)), at)
                 for i, phone in enumerate(phones)])
    first = start_worker(data_dir=tmp_path / "first")
    first_decisions = decisions_by_event(bootstrap, len(phones), timeout_s=180)
    assert {ds[0]["outcome"] for ds in first_decisions.values()} == {"passed"}
    first.stop()
    assert not first.alive()

    changelog = list(iter_records(bootstrap, topics.changelog_topic(APP_ID), idle_s=2.0))
    latest = {record.key: record.value for record in changelog}
    assert {key.decode() for key in latest} == set(phones)
    ends = {}
    for record in changelog:
        ends[record.partition] = max(ends.get(record.partition, -1), record.offset)
    stores = sorted((tmp_path / "first").glob(f"**/{topics.LAST_SENT_TABLE}-*.db"))
    assert len(stores) == PARTITIONS
    for path in stores:
        partition = int(path.name.rsplit("-", 1)[1].split(".")[0])
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            assert db.get(b"__faust\0offset__") == str(ends[partition]).encode(), path
            for key, value in db.items():
                if not bytes(key).startswith(b"__faust"):
                    assert latest[bytes(key)] == bytes(value)
        finally:
            db.close()

    shutil.rmtree(tmp_path / "first")
    start_worker(data_dir=tmp_path / "second")
    later = now_ms()
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(None, codecs.TRIGGER.encode(trigger(f"b-{i}", phone, later)), later)
                 for i, phone in enumerate(phones)])
    by_event = decisions_by_event(bootstrap, 2 * len(phones), timeout_s=180)
    second = [ds[0] for event_id, ds in by_event.items() if event_id.startswith("b-")]
    assert len(second) == len(phones)
    passed = [d["event_id"] for d in second if d["outcome"] != "suppressed_cooldown"]
    assert not passed, f"{len(passed)} numbers passed again\n{worker_logs(tmp_path)}"
    first_ids = {ds[0]["decision_id"] for ds in first_decisions.values()}
    assert {d["cause_ref"] for d in second} == first_ids


def test_bad_input_is_dead_lettered_or_decided_and_good_input_keeps_flowing(
        bootstrap, start_worker, tmp_path):
    at = now_ms()
    good = [f"+45 20 12 {i:02d} 34" for i in range(40)]
    bad: list[tuple[str, bytes | None, str]] = [  # label, value, expected reason
        ("garbage", b"\x8f\x00\xffnot avro at all", "undecodable"),
        ("truncated", codecs.TRIGGER.encode(trigger("t-trunc", "+4520000000", at))[:-4],
         "undecodable"),
        ("missing", json.dumps({"event_id": "t-missing", "occurred_at_ms": at}).encode(),
         "invalid_record"),
        ("mistyped", json.dumps(trigger("t-mistyped", "+4520000000", "yesterday")).encode(),
         "invalid_record"),
        ("tombstone", None, "tombstone"),
        ("letters", codecs.TRIGGER.encode(trigger("t-letters", "+1 412 535 abcd", at)),
         "invalid_number"),
        ("short", codecs.TRIGGER.encode(trigger("t-short", "2012", at)), "invalid_number"),
        ("unknown", codecs.TRIGGER.encode(
            trigger("t-unknown", "+4520123456", at, automation_id="nope")), "unknown_automation"),
        ("disabled", codecs.TRIGGER.encode(
            trigger("t-disabled", "+4520123456", at, event_type="paused_event")),
         "automation_disabled"),
        ("future", codecs.TRIGGER.encode(
            trigger("t-future", "+4520123456", at + 86_400_000)), "future_trigger"),
        ("ancient", codecs.TRIGGER.encode(
            trigger("t-ancient", "+4520123456", at - 3 * 365 * 86_400_000)), "stale_trigger"),
    ]
    records = []
    for i, phone in enumerate(good):
        records.append((b"good", codecs.TRIGGER.encode(trigger(f"g-{i}", phone, at)), at))
        if i < len(bad):
            records.append((b"bad", bad[i][1], at))
    for automation in BAD_AUTOMATIONS:
        publish_automation(bootstrap, automation)
    worker = start_worker()
    produce_all(producer(bootstrap), topics.TRIGGERS, records)

    decided_events = len(good) + sum(1 for *_, r in bad if r not in
                                     ("undecodable", "invalid_record", "tombstone"))
    try:
        by_event = decisions_by_event(bootstrap, decided_events, timeout_s=120)
    except TimeoutError:
        pytest.fail(f"good triggers stopped flowing\n{worker_logs(tmp_path)}")
    assert all(by_event[f"g-{i}"][0]["outcome"] == "passed" for i in range(len(good)))
    reasons = {e: ds[0]["outcome"] for e, ds in by_event.items() if not e.startswith("g-")}
    assert reasons == {
        "t-letters": "invalid_number", "t-short": "invalid_number",
        "t-unknown": "unknown_automation", "t-disabled": "automation_disabled",
        "t-future": "future_trigger", "t-ancient": "stale_trigger",
    }
    assert "letters_in_number" in by_event["t-letters"][0]["detail"]
    dead = [codecs.DEAD_LETTER.decode(r.value)
            for r in iter_records(bootstrap, topics.DEADLETTER, idle_s=1.0)]
    assert sorted(d["reason"] for d in dead) == sorted(
        r for *_, r in bad if r in ("undecodable", "invalid_record", "tombstone"))
    for d in dead:
        assert d["source_topic"] == topics.TRIGGERS and d["source_offset"] >= 0
        assert d["detail"]
    assert worker.alive(), "bad input stopped the worker"


def test_an_automation_update_reaches_the_running_worker(bootstrap, start_worker, tmp_path):
    publish_automation(bootstrap, BAD_AUTOMATIONS[0])
    start_worker()
    at = now_ms()
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(b"k", codecs.TRIGGER.encode(trigger("before", "+4520123456", at)), at)])
    assert decisions_by_event(bootstrap, 1, 120)["before"][0]["outcome"] == "passed"

    publish_automation(bootstrap, BAD_AUTOMATIONS[0].updated(enabled=False))
    deadline = time.monotonic() + 60
    for i in range(1000):
        assert time.monotonic() < deadline, "the update never reached the worker"
        value = codecs.TRIGGER.encode(trigger(f"after-{i}", f"+452012{i:04d}", now_ms()))
        produce_all(producer(bootstrap), topics.TRIGGERS, [(b"k", value, now_ms())])
        decision = decisions_by_event(bootstrap, i + 2, 60)[f"after-{i}"][0]
        if decision["outcome"] == "automation_disabled":
            break
        time.sleep(0.5)


def test_worker_refuses_topics_with_other_partition_counts(bootstrap, start_worker, tmp_path):
    worker = start_worker(SMSCOOL_PARTITIONS="3")
    assert worker.process.wait(timeout=60) == 2
    log = worker.log_path.read_text()
    assert "refusing to start" in log and "same partition count" in log


def test_two_workers_share_the_partitions_and_survive_losing_one(
        bootstrap, start_worker, tmp_path):
    sc = scenario(seed=31, n_triggers=6000, n_numbers=1500, end_ms=now_ms(),
                  holding=False)
    _, expected, _ = expected_outcomes(sc)
    first, second = start_worker(), start_worker()
    feed(bootstrap, sc)
    wait_for(bootstrap, topics.DECISIONS, lambda rs: len(rs) >= 2000, 180)
    second.kill()
    try:
        by_event = decisions_by_event(bootstrap, len(expected), timeout_s=240)
    except TimeoutError:
        pytest.fail(f"the surviving worker did not take over\n{worker_logs(tmp_path)}")
    assert first.alive()
    assert_matches_model(by_event, expected)
    sends = outbox(bootstrap)
    passed = {decision_id(e, x.automation_id) for e, x in expected.items() if x.outcome == "passed"}
    assert {s["decision_id"] for s in sends} == passed
    assert_no_double_send(sends, sc)
    # Both workers did part of the work: each wrote RocksDB files of its partitions.
    assert table_contents(first.data_dir) and table_contents(second.data_dir)
