"""The benchmark's printed tables and its plot, from a made-up result."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import latency_table, recovery_lines, throughput_table


def _result(events_per_s: float) -> dict:
    return {"events_per_s": events_per_s, "peak_rss_bytes": 100 * 2**20,
            "state_bytes_per_number": 61.5, "seconds": 12.0, "startup_s": 4.5,
            "cpu_share": 0.98, "broker_cpu_share": 0.3, "timeline": [10, 20, 5]}


CONTENDERS = {"sms-cooldown": _result(6000), "textbook-faust": _result(2000),
              "plain-confluent": _result(20000)}


def test_the_throughput_table_compares_with_textbook_faust():
    lines = throughput_table(CONTENDERS).splitlines()
    assert lines[0].split()[:3] == ["contender", "events/s", "vs"]
    assert "3.00x" in lines[1] and "1.00x" in lines[2] and "10.00x" in lines[3]
    assert "100 MiB" in lines[1] and "61.5" in lines[1] and "98%" in lines[1]


def test_the_latency_table_shows_skipped_contenders():
    table = latency_table({
        "sms-cooldown": {"rate_per_s": 3000, "triggers": 180000, "p50_ms": 4,
                         "p99_ms": 40, "max_ms": 120},
        "textbook-faust": {"rate_per_s": 3000, "skipped": "its 2,000 events/s cannot keep up"},
    })
    assert "180,000" in table and "skipped" in table


def test_recovery_lines_say_whether_the_probe_was_decided_right():
    figures = {"numbers": 1000, "seconds_to_probe_decision": 9.5,
               "seconds_to_recovery_log_line": 8.0, "probe_outcome": "passed",
               "probe_expected": "suppressed_cooldown"}
    text = recovery_lines(figures, 5.0)
    assert "9.5 s" in text and "EXPECTED suppressed_cooldown" in text


def test_the_plot_is_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from bench.report import plot

    document = {
        "machine": {"cpu_count": 2, "cpu_model": "test"},
        "params": {"events": 1000, "numbers": 100},
        "contenders": CONTENDERS,
        "latency": {"sms-cooldown": {"rate_per_s": 3000, "p99_ms": 40,
                                     "quantiles_ms": {"0": 1, "50": 4, "99": 40, "100": 120}}},
    }
    path = tmp_path / "bench.png"
    plot(path, document)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
