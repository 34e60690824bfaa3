"""The benchmark's arithmetic: throughput, percentiles, tallies, the progress line."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.measure import (
    Tally,
    compare,
    cpu_share,
    events_per_s,
    latency_summary,
    log_span_s,
    max_per_second,
    per_second_counts,
    percentile,
)
from bench.progress import format_duration, progress_line


def test_events_per_s_is_events_over_first_read_to_last_output():
    assert events_per_s(10_000, 1_000, 3_000) == 5_000
    # Never divide by less than the clock's resolution.
    assert events_per_s(5, 1_000, 1_000) == 5_000


def test_nearest_rank_percentiles():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_summary_sorts_and_keeps_the_tail():
    summary = latency_summary([5, 1, 3, 1000, 2])
    assert (summary["p50_ms"], summary["max_ms"], summary["count"]) == (3, 1000, 5)
    assert summary["quantiles_ms"]["100"] == 1000
    assert summary["quantiles_ms"]["0"] == 1


def test_per_second_counts_and_max_per_second():
    assert per_second_counts([1000, 1500, 2999, 3000, 500], 1000) == [3, 1, 1]
    timed = [(0, 5), (10, 7), (1200, 3), (3100, 40)]
    assert max_per_second(timed) == [7, 3, 0, 40]
    assert max_per_second([]) == []


def _decision(event_id: str, outcome: str, decision_id: str | None = None) -> dict:
    return {"event_id": event_id, "outcome": outcome, "decision_id": decision_id or event_id}


def test_a_tally_counts_a_replayed_decision_once():
    tally = Tally()
    for d in (_decision("e1", "passed"), _decision("e2", "suppressed_cooldown"),
              _decision("e1", "passed")):
        tally.add(d)
    assert tally.outcomes == Counter(passed=1, suppressed_cooldown=1)
    assert (tally.passed, tally.repeated, tally.conflicting) == ({"e1"}, 1, 0)
    tally.add(_decision("e2", "passed"))
    assert tally.conflicting == 1


def test_compare_names_the_contender_that_differs():
    expected = Counter(passed=1, suppressed_cooldown=1)
    good, bad = Tally(), Tally()
    for d in (_decision("e1", "passed"), _decision("e2", "suppressed_cooldown")):
        good.add(d)
    for d in (_decision("e1", "suppressed_cooldown"), _decision("e2", "passed")):
        bad.add(d)
    same, lines = compare({"a": good}, expected, {"e1"})
    assert same and "same" in lines[0]
    same, lines = compare({"a": good, "b": bad}, expected, {"e1"})
    assert not same
    assert "DIFFERENT" in lines[1] and "1 missing, 1 extra" in lines[1]


def test_progress_line_shows_count_rate_and_eta():
    line = progress_line("preload", 250, 1000, 5.0)
    assert "250/1,000" in line and "25.0%" in line and "50/s" in line and "ETA 0:15" in line
    assert "ETA -" in progress_line("done", 1000, 1000, 5.0)
    assert format_duration(3725) == "1:02:05"


def test_cpu_share_is_cpu_seconds_per_wall_second_inside_the_window():
    samples = [(0, 0.0), (1000, 0.5), (2000, 1.5), (3000, 2.5), (4000, 2.5)]
    assert cpu_share(samples, 1000, 3000) == 1.0
    assert cpu_share(samples, 3000, 4000) == 0.0
    assert cpu_share(samples, 1500, 1900) is None


def test_log_span_reads_faust_line_timestamps():
    log = "\n".join([
        "[2026-11-27 02:31:20,211] [1] [INFO] (Re-)joining group sms-cooldown",
        "| a table line without a time |",
        "[2026-11-27 02:31:28,336] [1] [INFO] (Re-)joining group sms-cooldown",
        "[2026-11-27 02:31:31,344] [1] [INFO] Setting newly assigned partitions",
        "[2026-11-27 02:31:31,404] [1] [INFO] [^---Recovery]: Restoring state from changelog",
        "[2026-11-27 02:32:01,558] [1] [INFO] [^---Recovery]: Done reading from changelog",
    ])
    assert log_span_s(log, "(Re-)joining group", "Setting newly assigned") == 11.133
    assert log_span_s(log, "Restoring state", "Done reading") == 30.154
    assert log_span_s(log, "Restoring state", "never logged") is None
