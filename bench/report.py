"""The benchmark's report: the printed tables, the JSON document and the PNG plot."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from bench.contenders import TEXTBOOK


def machine() -> dict[str, Any]:
    import psutil

    freq = psutil.cpu_freq()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_mhz": round(freq.current) if freq else None,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f} MiB"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def throughput_table(contenders: dict[str, dict]) -> str:
    """events/s, the ratio to textbook Faust, peak RSS, state per number; then how long
    it decided, its start-up (left out of events/s), and the CPU it and the broker used
    while it decided (100 % = one core)."""
    base = contenders.get(TEXTBOOK, {}).get("events_per_s")
    header = ("contender", "events/s", "vs textbook", "peak RSS", "state B/number",
              "decided in", "start-up", "CPU", "broker CPU")
    rows = [header]
    for name, r in contenders.items():
        rows.append((
            name, f"{r['events_per_s']:,.0f}",
            f"{r['events_per_s'] / base:.2f}x" if base else "-",
            _mib(r["peak_rss_bytes"]), f"{r['state_bytes_per_number']:,.1f}",
            f"{r['seconds']:,.1f} s", f"{r['startup_s']:,.1f} s",
            _share(r.get("cpu_share")), _share(r.get("broker_cpu_share")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                  for i, cell in enumerate(row)).rstrip()
        for row in rows)


def latency_table(latency: dict[str, dict]) -> str:
    lines = [f"{'contender':16} {'rate/s':>8}   {'triggers':>9}   {'p50 ms':>7}   "
             f"{'p99 ms':>7}   {'max ms':>7}"]
    for name, r in latency.items():
        if "skipped" in r:
            lines.append(f"{name:16} {r.get('rate_per_s', 0):>8,.0f}   skipped: {r['skipped']}")
            continue
        lines.append(f"{name:16} {r['rate_per_s']:>8,.0f}   {r['triggers']:>9,}   "
                     f"{r['p50_ms']:>7,}   {r['p99_ms']:>7,}   {r['max_ms']:>7,}")
    return "\n".join(lines)


def recovery_lines(recovery: dict, ready_s: float | None) -> str:
    records = recovery.get("changelog_records")
    read = f", {records:,} changelog records" if records else ""
    lines = [f"table rebuild from the changelog ({recovery['numbers']:,} numbers{read}): "
             f"{recovery['seconds_to_probe_decision']:.1f} s from worker start to the probe's "
             f"decision"]
    if recovery.get("seconds_to_recovery_log_line") is not None:
        lines.append(f"  Faust's 'Recovery complete' logged after "
                     f"{recovery['seconds_to_recovery_log_line']:.1f} s")
    joining, reading = recovery.get("seconds_joining_group"), recovery.get(
        "seconds_reading_changelog")
    if joining is not None and reading is not None:
        lines.append(f"  of which joining the group {joining:.1f} s, reading the changelog "
                     f"{reading:.1f} s (from the worker's log)")
    if ready_s is not None:
        lines.append(f"  (a worker with an empty table decided its first trigger "
                     f"{ready_s:.1f} s after its start)")
    ok = recovery["probe_outcome"] == recovery["probe_expected"]
    lines.append(f"  probe on {recovery.get('probe_number', 'the hottest number')}: "
                 f"{recovery['probe_outcome']} "
                 f"({'as expected' if ok else 'EXPECTED ' + recovery['probe_expected']})")
    return "\n".join(lines)


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def plot(path: Path, document: dict) -> None:
    """Throughput per contender, decisions per second over the run, and the latency
    distribution of the paced run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders = document["contenders"]
    latency = {k: v for k, v in document.get("latency", {}).items() if "quantiles_ms" in v}
    panels = 2 + bool(latency)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    names = list(contenders)
    colors = {name: f"C{i}" for i, name in enumerate(names)}

    ax = axes[0]
    rates = [contenders[n]["events_per_s"] for n in names]
    bars = ax.bar(names, rates, color=[colors[n] for n in names])
    ax.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
    ax.set_ylabel("events/s (first read → last output)")
    params = document["params"]
    ax.set_title(f"Throughput, {params['events']:,} triggers / {params['numbers']:,} numbers")

    ax = axes[1]
    for name in names:
        timeline = contenders[name].get("timeline") or []
        # A run of a few seconds would be a dot or two: mark the points.
        ax.plot(range(len(timeline)), timeline, label=name, color=colors[name],
                marker="o" if len(timeline) < 20 else None)
    ax.set_xlabel("seconds since first read")
    ax.set_ylabel("decisions per second")
    ax.set_title("Decisions over the run")
    ax.legend()

    if latency:
        ax = axes[2]
        for name, r in latency.items():
            quantiles = sorted((float(q), v) for q, v in r["quantiles_ms"].items())
            ax.plot([max(v, 0.5) for _, v in quantiles], [q for q, _ in quantiles],
                    label=f"{name} (p99 {r['p99_ms']} ms)", color=colors.get(name))
        ax.set_xscale("log")
        ax.set_xlabel("decision latency, ms (trigger timestamp → decision timestamp)")
        ax.set_ylabel("percentile")
        rate = next(iter(latency.values()))["rate_per_s"]
        ax.set_title(f"Latency at {rate:,.0f} triggers/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    cpu = document["machine"]
    fig.suptitle(f"sms-cooldown benchmark — {cpu['cpu_count']} cores, {cpu['cpu_model']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mb(value: int) -> str:
    return f"{value / 1e6:,.1f} MB"


def _met(target: dict) -> str:
    if target.get("met") is None:
        return "not measured"
    return "met" if target["met"] else "NOT met"


def state_run_lines(state: dict, partitions: int) -> str:
    """The state run: RSS growth, state on disk and the rebuild, each against its
    target (for a million numbers; MB are 10^6 bytes)."""
    n = state["numbers"]
    goals = state.get("targets") or {}
    rss, disk = goals.get("rss_growth_bytes", {}), goals.get("state_bytes_per_number", {})
    lines = [f"state run, {state['contender']}: {state['triggers']:,} triggers, each to a new "
             f"number, {partitions} partitions (decided in {state['decided_in_s']:,.1f} s, "
             f"fed as they came):",
             f"  RSS {_mb(state['rss_start_bytes'])} after its first decision, "
             f"{_mb(state['rss_end_bytes'])} after the last: growth "
             f"{_mb(state['rss_growth_bytes'])} "
             f"({state['rss_growth_bytes_per_number']:,.1f} bytes/number; target < "
             f"{_mb(rss.get('below', 0))}: {_met(rss)}); peak {_mb(state['peak_rss_bytes'])}"]
    curve = state.get("rss_by_decided") or []
    if len(curve) > 1:
        lines.append("  RSS on the way: " + ", ".join(
            f"{decided:,} {rss_bytes / 1e6:,.0f}" for decided, rss_bytes in curve) + " MB")
    lines.append(f"  state on disk, compacted: {state['state_bytes_per_number']:,.1f} bytes per "
                 f"number ({_mb(state['state_bytes'])} in {len(state['state_folders'])} "
                 f"RocksDB folders, {state['state_keys']:,} keys; target ≤ "
                 f"{disk.get('at_most', 0)}: {_met(disk)})")
    ok = state["decided_as_expected"]
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(state["outcomes"].items()))
    lines.append(f"  decisions: {outcomes}; {state['send_requests']:,} send requests "
                 f"({'as expected' if ok else 'EXPECTED ' + str(state['expected_outcomes'])})")
    rebuild = state.get("rebuild")
    if rebuild:
        target = goals.get("rebuild_s", {})
        lines.append("  " + recovery_lines(rebuild, None).replace("\n", "\n  "))
        lines.append(f"  rebuild target ≤ {target.get('at_most', 0):.0f} s from worker start "
                     f"to the probe's decision: {_met(target)}")
    if n < 1_000_000:
        lines.append(f"  (the targets are for 1,000,000 numbers; this run had {n:,})")
    return "\n".join(lines)
