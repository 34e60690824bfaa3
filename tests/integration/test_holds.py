"""Held messages end to end: real workers on the embedded broker, with a clock that
runs from just before a window opens (SMSCOOL_CLOCK). Triggers carry fixed Kafka
timestamps, so every decision is the same however fast the machine is; what the
tests check of time is only what the records say (decided at the opening, never
released before the worker's clock got there)."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bench.workload import danish_numbers
from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.bundles import events_seen
from streams.clock import Clock
from streams.kafka import iter_records, produce_all, producer, wait_for
from tests.helpers import worker_logs

pytestmark = pytest.mark.integration

CPH = ZoneInfo("Europe/Copenhagen")
OPENING = int(datetime(2026, 1, 15, 8, 0, tzinfo=CPH).timestamp() * 1000)
MINUTE = 60_000
HOUR = 60 * MINUTE
# The worker's clock reaches the opening this long after the test starts it.
LEAD_S = 25

WINDOWED = Automation("morning", "Morning news", country="DK", event_type="news",
                      window="daily 08:00-21:00", message="Hi {name}", sender="Shop",
                      cooldown_enabled=True, cooldown_ms=HOUR, updated_at_ms=1)
DEFERRING = [
    Automation(f"defer-{p}", f"Deferring, priority {p}", country="DK",
               event_type=f"defer_{p}", message="Hi {name}", sender="Shop",
               cooldown_enabled=True, cooldown_ms=HOUR, on_cooldown="defer",
               max_hold_ms=6 * HOUR, priority=p, updated_at_ms=1)
    for p in (0, 3, 1)
]


def worker_clock() -> Clock:
    """A clock that reads LEAD_S seconds before OPENING now, for the worker's
    SMSCOOL_CLOCK."""
    return Clock.starting_at(OPENING - LEAD_S * 1000)


def wall_ms_of(clock: Clock, at_ms: int) -> int:
    """The machine's epoch ms at which `clock` reads `at_ms`."""
    return clock.wall_ms + round((at_ms - clock.start_ms) / clock.speed)


def trigger(event_id: str, phone: str, event_type: str, at_ms: int) -> tuple:
    value = codecs.TRIGGER.encode({
        "event_id": event_id, "automation_id": None, "event_type": event_type,
        "segment": None, "phone": phone, "occurred_at_ms": at_ms,
        "attributes": {"name": "Ada"}})
    return (phone.encode(), value, at_ms)


def sent(phone: str, at_ms: int, message_id: str) -> tuple:
    return (phone.encode(), codecs.SENT.encode({
        "phone": phone, "country": None, "sent_at_ms": at_ms, "origin": "crm",
        "decision_id": None, "message_id": message_id}), at_ms)


def decisions(bootstrap: str) -> list[tuple[dict, int]]:
    """Every decision with the Kafka timestamp of its record (the machine's clock)."""
    return [(codecs.DECISION.decode(r.value), r.timestamp_ms)
            for r in iter_records(bootstrap, topics.DECISIONS, idle_s=1.0)]


def wait_for_outcomes(bootstrap: str, wanted: Counter, timeout_s: float) -> None:
    seen: Counter = Counter()

    def enough(records: list) -> bool:
        seen[codecs.DECISION.decode(records[-1].value)["outcome"]] += 1
        return all(seen[k] >= n for k, n in wanted.items())

    try:
        wait_for(bootstrap, topics.DECISIONS, enough, timeout_s)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {dict(seen)}, wanted {dict(wanted)}") from None


def outbox(bootstrap: str) -> list[tuple[dict, int]]:
    return [(codecs.SEND_REQUEST.decode(r.value), r.timestamp_ms)
            for r in iter_records(bootstrap, topics.OUTBOX, idle_s=1.0)]


def test_window_holds_go_out_at_the_opening_and_deferrals_at_the_cooldown_end(
        bootstrap, start_worker, tmp_path):
    for automation in (WINDOWED, *DEFERRING):
        publish_automation(bootstrap, automation)
    clock = worker_clock()
    start_worker(SMSCOOL_CLOCK=clock.spec())
    before = OPENING - 30 * MINUTE
    *window_phones, collapse_phone = danish_numbers(random.Random(1), 11)
    # An outside send just after 07:00: the cooldown (1 h) of the deferring automations
    # ends 5 s after the opening.
    deferred_to = OPENING + 5_000
    produce_all(producer(bootstrap), topics.SENT,
                [sent(collapse_phone, deferred_to - HOUR, "m-1")])
    # Nothing orders one input topic against another: the send must be in first.
    wait_for(bootstrap, topics.BY_NUMBER, events_seen(1), 60)
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        *(trigger(f"w-{i}", phone, "news", before + i) for i, phone in enumerate(window_phones)),
        *(trigger(f"d-{a.priority}", collapse_phone, a.event_type, before + 10 + a.priority)
          for a in DEFERRING),
    ])
    try:
        wait_for_outcomes(bootstrap, Counter(held_window=10, released=11, collapsed=2), 180)
    except TimeoutError:
        pytest.fail(f"held messages were not released\n{worker_logs(tmp_path)}")
    by_event: dict[str, list[dict]] = {}
    for d, _ in decisions(bootstrap):
        by_event.setdefault(d["event_id"], []).append(d)

    # Outside the window: held until 08:00 in the recipient's zone, released then.
    for i in range(10):
        held, released = by_event[f"w-{i}"][:2]
        assert (held["outcome"], held["release_at_ms"]) == ("held_window", OPENING)
        assert (released["outcome"], released["decided_at_ms"]) == ("released", OPENING)
    # Three deferred behind one SMS: only the highest priority goes out at the end of the
    # cooldown; the two others collapse and are deferred behind it.
    outcomes = {e: [(d["outcome"], d["release_at_ms"]) for d in ds]
                for e, ds in by_event.items() if e.startswith("d-")}
    assert outcomes["d-3"] == [("deferred_cooldown", deferred_to), ("released", None)]
    for other in ("d-0", "d-1"):
        assert outcomes[other] == [("deferred_cooldown", deferred_to), ("collapsed", None),
                                   ("deferred_cooldown", deferred_to + HOUR)]
    sends = outbox(bootstrap)
    assert Counter(s["decision_id"] for s, _ in sends) == Counter(
        {by_event[e][0]["decision_id"]: 1 for e in [f"w-{i}" for i in range(10)] + ["d-3"]})
    for send, written_at in sends:
        # Never sent before the worker's clock reached the release time.
        assert written_at >= wall_ms_of(clock, send["decided_at_ms"]) - 5
    # Nor inside the interval of the outside SMS.
    assert all(s["decided_at_ms"] - (deferred_to - HOUR) >= HOUR
               for s, _ in sends if s["e164"] == collapse_phone)
    held_now = {r.key: r.value for r in iter_records(bootstrap, topics.HELD, idle_s=1.0)}
    # Only the two collapsed ones are still held (deferred one more hour).
    assert sorted(k for k, v in held_now.items() if v is not None) == sorted(
        by_event[e][0]["decision_id"].encode() for e in ("d-0", "d-1"))


def test_held_messages_survive_kill_9_and_a_lost_data_folder_and_go_out_once(
        bootstrap, start_worker, tmp_path):
    publish_automation(bootstrap, WINDOWED)
    env = {"SMSCOOL_CLOCK": worker_clock().spec()}
    first = start_worker(**env)
    phones = danish_numbers(random.Random(2), 200)
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        trigger(f"k-{i}", phone, "news", OPENING - HOUR + i) for i, phone in enumerate(phones)])
    wait_for_outcomes(bootstrap, Counter(held_window=200), 120)
    first.kill()
    shutil.rmtree(first.data_dir)
    start_worker(data_dir=first.data_dir, **env)
    try:
        wait_for_outcomes(bootstrap, Counter(released=200), 180)
    except TimeoutError:
        pytest.fail(f"held messages lost after the kill\n{worker_logs(tmp_path)}")
    time.sleep(2)  # a second release would come at once: give it the chance to show
    sends = Counter(s["decision_id"] for s, _ in outbox(bootstrap))
    released = Counter(d["decision_id"] for d, _ in decisions(bootstrap)
                       if d["outcome"] == "released")
    assert len(sends) == 200 and set(sends.values()) == {1}
    assert set(released.values()) == {1}


def test_held_list_names_numbers_by_tag_and_cancel_and_disable_end_them(
        bootstrap, start_worker, tmp_path, monkeypatch, capsys):
    from smscool.cli import main
    from streams.settings import Settings

    evening = WINDOWED.updated(automation_id="evening", event_type="evening")
    for automation in (WINDOWED, evening):
        publish_automation(bootstrap, automation)
    # Two hours before the opening, for the worker and for the command line (a cancel
    # is dated by its clock): nothing comes due during the test.
    clock = Clock.starting_at(OPENING - 2 * HOUR).spec()
    start_worker(SMSCOOL_CLOCK=clock)
    monkeypatch.setenv("SMSCOOL_CLOCK", clock)
    phones = danish_numbers(random.Random(3), 8)
    produce_all(producer(bootstrap), topics.TRIGGERS, [
        trigger(f"h-{i}", phone, "news" if i < 5 else "evening", OPENING - 3 * HOUR + i)
        for i, phone in enumerate(phones)])
    wait_for_outcomes(bootstrap, Counter(held_window=8), 120)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("SMSCOOL_LOG_HASH_KEY", "test-key")
    tag = Settings.from_env().number_tag

    assert main(["held", "list", "morning"]) == 0
    shown = capsys.readouterr().out
    assert "5 message(s) of morning held" in shown
    assert sorted(line.split()[0] for line in shown.splitlines()[:-1]) == sorted(
        tag(phone) for phone in phones[:5])
    assert not any(phone[1:] in shown for phone in phones)  # no raw number

    assert main(["held", "cancel", "morning"]) == 0
    wait_for_outcomes(bootstrap, Counter(held_window=8, cancelled=5), 60)
    assert main(["automation", "disable", "evening"]) == 0
    wait_for_outcomes(bootstrap, Counter(held_window=8, cancelled=5, automation_disabled=3),
                      60)
    capsys.readouterr()
    assert main(["held", "list", "morning"]) == 0
    assert "0 message(s) of morning held" in capsys.readouterr().out
    by_event = {d["event_id"]: d["outcome"] for d, _ in decisions(bootstrap)}
    assert by_event == {**{f"h-{i}": "cancelled" for i in range(5)},
                        **{f"h-{i}": "automation_disabled" for i in range(5, 8)}}
