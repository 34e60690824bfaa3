"""What the benchmark computes from what it read: throughput from record timestamps,
latency percentiles, the tally of decisions and the comparison of contenders, and the
on-disk size of a RocksDB state after compaction.

Times are the Kafka timestamps (CreateTime) that each client stamps on the records
it produces, in epoch ms; every process runs on this machine, so they share a clock.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from streams.rule import PASSED


def events_per_s(events: int, first_read_ms: int, last_output_ms: int) -> float:
    """Events over the time from the first input record read to the last output
    produced; at least 1 ms, the clock's resolution."""
    return events / (max(1, last_output_ms - first_read_ms) / 1000)


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of values sorted ascending."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ms: Iterable[int]) -> dict[str, float]:
    values = sorted(latencies_ms)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50), "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99), "p999_ms": percentile(values, 99.9),
        "max_ms": values[-1], "mean_ms": round(sum(values) / len(values), 2),
        # For the plot: the distribution at every 2nd percentile and in the tail.
        "quantiles_ms": {str(q): percentile(values, q) for q in QUANTILES},
    }


QUANTILES = (*range(0, 100, 2), 99, 99.5, 99.9, 100)


def per_second_counts(timestamps: Iterable[int], start_ms: int) -> list[int]:
    """How many timestamps fall in each second since `start_ms` (earlier ones count
    in the first)."""
    counts: list[int] = []
    for ts in timestamps:
        second = max(0, (ts - start_ms) // 1000)
        if second >= len(counts):
            counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def max_per_second(timed: list[tuple[int, int]]) -> list[int]:
    """The largest latency among the triggers of each second of a paced run, from
    (trigger timestamp, latency) sorted by timestamp: a line that climbs means the
    contender fell behind the rate."""
    if not timed:
        return []
    start = timed[0][0]
    out: list[int] = []
    for at, latency in timed:
        second = (at - start) // 1000
        if second >= len(out):
            out.extend([0] * (second + 1 - len(out)))
        out[second] = max(out[second], latency)
    return out


def cpu_share(samples: list[tuple[int, float]], start_ms: int, end_ms: int) -> float | None:
    """CPU seconds per wall second between two moments (1.0 = one core busy), from
    (epoch ms, CPU seconds so far) samples, read at the samples nearest inside."""
    inside = [(at, cpu) for at, cpu in samples if start_ms <= at <= end_ms]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return round((c1 - c0) / ((t1 - t0) / 1000), 3)


_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def log_span_s(log: str, start_marker: str, end_marker: str) -> float | None:
    """Seconds between the first log line with `start_marker` and the first later one
    with `end_marker`, from Faust's line timestamps (`[2026-01-01 10:00:00,123] ...`)."""
    start = None
    for line in log.splitlines():
        match = _LOG_TIME.match(line)
        if not match:
            continue
        # The worker's local time, taken as UTC: only the difference counts.
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
        if start is None and start_marker in line:
            start = at
        elif start is not None and end_marker in line:
            return (at - start).total_seconds()
    return None


@dataclass
class Tally:
    """One contender's decisions, one per decision id (a replay repeats the id)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    passed: set[str] = field(default_factory=set)  # event ids
    passed_decision_ids: set[str] = field(default_factory=set)
    decided: set[str] = field(default_factory=set)  # event ids
    repeated: int = 0  # decision records for a decision id seen before
    conflicting: int = 0  # a repeat with another outcome
    _outcome_of: dict[str, str] = field(default_factory=dict, repr=False)

    def add(self, decision: dict) -> None:
        decision_id, outcome = decision["decision_id"], decision["outcome"]
        seen = self._outcome_of.get(decision_id)
        if seen is not None:
            self.repeated += 1
            self.conflicting += seen != outcome
            return
        self._outcome_of[decision_id] = outcome
        self.outcomes[outcome] += 1
        self.decided.add(decision["event_id"])
        if outcome == PASSED:
            self.passed.add(decision["event_id"])
            self.passed_decision_ids.add(decision_id)


def compare(tallies: dict[str, Tally], expected_outcomes: Counter[str],
            expected_passed: set[str]) -> tuple[bool, list[str]]:
    """Did every contender decide like the others and like the rule run over the
    input in order? Returns the verdict and one line per contender."""
    lines = []
    same = True
    for name, tally in tallies.items():
        problems = []
        if tally.outcomes != expected_outcomes:
            problems.append(f"counts {dict(tally.outcomes)} != expected {dict(expected_outcomes)}")
        if tally.passed != expected_passed:
            missing = len(expected_passed - tally.passed)
            extra = len(tally.passed - expected_passed)
            problems.append(f"passed ids differ: {missing} missing, {extra} extra")
        if tally.conflicting:
            problems.append(f"{tally.conflicting} replayed decisions with another outcome")
        same = same and not problems
        summary = ", ".join(f"{k} {v:,}" for k, v in sorted(tally.outcomes.items()))
        verdict = "same" if not problems else "DIFFERENT: " + "; ".join(problems)
        repeats = f", {tally.repeated} repeated" if tally.repeated else ""
        lines.append(f"  {name:16} {summary}{repeats}: {verdict}")
    return same, lines


@dataclass(frozen=True)
class StateSize:
    bytes: int  # every file of the store but RocksDB's text logs (LOG, LOG.old.*)
    sst_bytes: int
    keys: int  # the table's keys (Faust's own offset bookkeeping left out)


def rocksdb_folders(root: Path) -> list[Path]:
    """Every RocksDB folder under `root` (a folder holding a CURRENT file), whatever
    the store calls them."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("**/CURRENT") if p.is_file())


def compacted_state_size(paths: list[Path]) -> StateSize:
    """Compact each RocksDB folder (the contender has stopped), then add up its files."""
    from rocksdict import Options, Rdict

    total = sst = keys = 0
    for path in paths:
        db = Rdict(str(path), Options(raw_mode=True))
        try:
            db.compact_range(None, None)
            keys += sum(1 for key in db.keys() if not bytes(key).startswith(b"__faust"))
        finally:
            db.close()
        for file in path.iterdir():
            if file.is_file() and not file.name.startswith("LOG"):
                size = file.stat().st_size
                total += size
                sst += size if file.suffix == ".sst" else 0
    return StateSize(total, sst, keys)
