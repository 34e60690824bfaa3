"""What the REST API tells of sms.decisions: counts by automation and outcome, and a
number's latest decisions, each decision once however often it was given."""

from smscool.decision_view import DAY_MS, HOUR_MS, DecisionCounts
from streams import codecs

NOW = 1_767_225_600_000


def decision(decision_id, outcome, at_ms, automation_id="welcome", e164=None, ref=None):
    return codecs.DECISION.encode({
        "decision_id": decision_id, "event_id": "e", "automation_id": automation_id,
        "e164": e164, "outcome": outcome, "detail": "", "decided_at_ms": at_ms,
        "source_topic": "sms.triggers", "source_partition": 0, "source_offset": 0,
        "cause_at_ms": None if ref is None else at_ms, "cause_origin": None,
        "cause_ref": ref, "release_at_ms": None})


def test_decision_counts_by_outcome_count_a_replay_once_and_keep_a_day():
    now = NOW
    counts = DecisionCounts()
    for value in (decision("d1", "passed", now - 60_000), decision("d1", "passed", now - 60_000),
                  decision("d2", "suppressed_cooldown", now - 2 * HOUR_MS),
                  decision("d3", "held_window", now - 10_000),
                  decision("d3", "released", now - 5_000),
                  decision("d4", "passed", now - 2 * DAY_MS),
                  decision("d5", "passed", now, automation_id="other"), b"garbage"):
        counts.add(value, now)
    assert counts.since("welcome", now - HOUR_MS) == {"held_window": 1, "passed": 1,
                                                      "released": 1}
    assert counts.since("welcome", now - DAY_MS) == {
        "held_window": 1, "passed": 1, "released": 1, "suppressed_cooldown": 1}
    counts.forget_before(now - HOUR_MS)
    assert counts.since("welcome", now - DAY_MS) == {"held_window": 1, "passed": 1,
                                                     "released": 1}


def test_a_numbers_latest_decisions_newest_first_of_one_automation_and_a_day():
    counts = DecisionCounts()
    ada, bo = "+4520123401", "+4520123402"
    for value in (decision("d1", "passed", NOW - 2 * HOUR_MS, e164=ada),
                  decision("d2", "suppressed_cooldown", NOW - HOUR_MS, e164=ada, ref="d1"),
                  decision("d2", "suppressed_cooldown", NOW - HOUR_MS, e164=ada, ref="d1"),
                  decision("d3", "passed", NOW - HOUR_MS, e164=bo),
                  decision("d4", "opted_out", NOW - HOUR_MS, "other", e164=ada),
                  decision("d5", "passed", NOW - 2 * DAY_MS, e164=ada)):
        counts.add(value, NOW)
    latest = counts.latest(ada, "welcome")
    assert [(d["decision_id"], d["outcome"]) for d in latest] == [
        ("d2", "suppressed_cooldown"), ("d1", "passed")]
    assert latest[0]["cause_ref"] == "d1"
    assert [d["decision_id"] for d in counts.latest(ada)] == ["d4", "d2", "d1"]
    assert counts.latest("+4520123499", "welcome") == []
    counts.forget_before(NOW - 90 * 60_000)
    assert [d["decision_id"] for d in counts.latest(ada)] == ["d4", "d2"]
    # Within the same minute, a second call finds nothing more to forget.
    counts.forget_before(NOW - 90 * 60_000 + 1)
    assert [d["decision_id"] for d in counts.latest(ada)] == ["d4", "d2"]
    # A later minute forgets what fell out of it.
    counts.forget_before(NOW - 30 * 60_000)
    assert counts.latest(ada) == []
