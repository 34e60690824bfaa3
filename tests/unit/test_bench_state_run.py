"""The state run's bookkeeping without a broker: the tally of its outputs, its targets,
its size from the options, its printed lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import _state_numbers, parser
from bench.measure import rocksdb_folders
from bench.report import state_run_lines
from bench.state_run import Marks, _checkpoints, targets
from bench.workload import UniqueWorkload

END_MS = 1_767_225_600_000


def _work(count: int = 5) -> UniqueWorkload:
    return UniqueWorkload.make(count, seed=1, end_ms=END_MS)


def _decision(work: UniqueWorkload, i: int, outcome: str = "passed") -> dict:
    return {"event_id": work.event_id(i), "outcome": outcome, "decision_id": f"d{i}"}


def _send(work: UniqueWorkload, i: int) -> dict:
    return {"event_id": work.event_id(i), "decision_id": f"d{i}"}


def test_marks_are_complete_once_every_trigger_is_decided_and_sent():
    work = _work(3)
    marks = Marks(work)
    for i in range(3):
        assert not marks.complete
        marks.decision(_decision(work, i))
    assert marks.decided == 3 and not marks.complete  # the send requests are missing
    for i in range(3):
        marks.send_request(_send(work, i))
    assert marks.complete and marks.as_expected()
    assert marks.has_decision(2)


def test_marks_count_repeats_and_other_events_apart():
    work = _work(3)
    marks = Marks(work)
    marks.decision(_decision(work, 0))
    marks.decision(_decision(work, 0))  # a replay, same outcome
    marks.decision(_decision(work, 1, "suppressed_cooldown"))
    marks.decision(_decision(work, 1, "passed"))  # a replay that changed its mind
    marks.decision({"event_id": "r1-state-probe", "outcome": "passed"})
    marks.send_request(_send(work, 0))
    marks.send_request(_send(work, 0))
    assert (marks.decided, marks.repeated_decisions, marks.conflicting) == (2, 2, 1)
    assert (marks.sends, marks.repeated_sends, marks.foreign) == (1, 1, 1)
    assert dict(marks.outcomes) == {"passed": 1, "suppressed_cooldown": 1}
    marks.decision(_decision(work, 2))
    marks.send_request(_send(work, 2))
    assert marks.complete and not marks.as_expected()  # one was suppressed


def test_rss_is_sampled_at_each_tenth():
    assert _checkpoints(1_000_000) == [100_000 * k for k in range(1, 11)]
    assert _checkpoints(5) == [1, 2, 3, 4, 5]
    assert _checkpoints(1) == [1]


def _figures(numbers: int = 1_000_000, growth: int = 150_000_000, per_number: float = 58.0,
             rebuild_s: float | None = 61.0) -> dict:
    figures = {
        "contender": "sms-cooldown", "numbers": numbers, "triggers": numbers,
        "rss_start_bytes": 80_000_000, "rss_end_bytes": 80_000_000 + growth,
        "rss_growth_bytes": growth, "rss_growth_bytes_per_number": growth / numbers,
        "peak_rss_bytes": 90_000_000 + growth,
        "rss_by_decided": [[numbers // 2, 100_000_000], [numbers, 80_000_000 + growth]],
        "state_bytes": int(per_number * numbers), "state_keys": numbers,
        "state_folders": ["v1/tables/last_sent-0.db", "v1/tables/last_sent-1.db"],
        "state_bytes_per_number": per_number, "decided_in_s": 500.0,
        "outcomes": {"passed": numbers}, "expected_outcomes": {"passed": numbers},
        "send_requests": numbers, "decided_as_expected": True,
    }
    if rebuild_s is not None:
        figures["rebuild"] = {"numbers": numbers, "changelog_records": numbers,
                              "seconds_to_probe_decision": rebuild_s,
                              "probe_number": "the last number written",
                              "probe_outcome": "suppressed_cooldown",
                              "probe_expected": "suppressed_cooldown"}
    figures["targets"] = targets(figures)
    return figures


def test_the_targets_say_which_are_met():
    goals = _figures()["targets"]
    assert goals["rss_growth_bytes"]["met"] and goals["state_bytes_per_number"]["met"]
    assert goals["rebuild_s"]["met"] is False and goals["at_target_size"]
    goals = _figures(numbers=20_000, growth=200_000_000, per_number=64.0, rebuild_s=None)[
        "targets"]
    assert goals["rss_growth_bytes"]["met"] is False  # below 200 MB, not at it
    assert goals["state_bytes_per_number"]["met"]  # at most 64
    assert goals["rebuild_s"]["met"] is None and not goals["at_target_size"]


def test_the_state_run_lines_show_the_three_figures_against_their_targets():
    text = state_run_lines(_figures(), partitions=4)
    assert "1,000,000 triggers, each to a new number, 4 partitions" in text
    assert "80.0 MB after its first decision, 230.0 MB after the last" in text
    assert "growth 150.0 MB" in text and "target < 200.0 MB: met" in text
    assert "58.0 bytes per number" in text and "2 RocksDB folders" in text
    assert "61.0 s from worker start" in text and "probe on the last number written" in text
    assert "rebuild target ≤ 60 s from worker start to the probe's decision: NOT met" in text
    assert "this run had" not in text
    small = state_run_lines(_figures(numbers=20_000, rebuild_s=None), partitions=4)
    assert "this run had 20,000" in small and "rebuild" not in small


@pytest.mark.parametrize(("argv", "expected"), [
    ([], 1_000_000),
    (["--quick"], 0),
    (["--contenders", "plain-confluent"], 0),
    (["--state-run", "0"], 0),
    (["--quick", "--state-run", "5000"], 5000),
    (["--state-only"], 1_000_000),
    (["--state-only", "--quick"], 20_000),
    (["--state-only", "--state-run", "20000"], 20_000),
])
def test_the_state_run_size_from_the_options(argv: list[str], expected: int):
    args = parser().parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    assert _state_numbers(args, names) == expected


def test_rocksdb_folders_are_found_by_their_current_file(tmp_path: Path):
    for name in ("v1/tables/last_sent-0.db", "v1/tables/last_sent-1.db", "ingest/offsets"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "CURRENT").write_text("MANIFEST-000001\n")
    (tmp_path / "v1/tables/last_sent-backups").mkdir()
    found = [str(p.relative_to(tmp_path)) for p in rocksdb_folders(tmp_path)]
    assert found == ["ingest/offsets", "v1/tables/last_sent-0.db", "v1/tables/last_sent-1.db"]
    assert rocksdb_folders(tmp_path / "missing") == []
