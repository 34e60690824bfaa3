"""`python -m bench`: run the benchmark and print its tables.

    python -m bench                        # default size: 1,000,000 triggers, 200,000 numbers
    python -m bench --quick --json FILE    # about a minute; the figures as JSON
    python -m bench --plot FILE.png        # throughput, decisions over time, latency
    python -m bench --state-only           # only the state run: 1,000,000 new numbers
    python -m bench --state-only --state-run 20000 --json FILE   # a small one

Each contender runs alone on a fresh embedded broker preloaded with the same records
(or, with KAFKA_BOOTSTRAP_SERVERS and --external-kafka, on that cluster; see --help).
At the full size a state run follows: the shipped worker alone on one trigger for each
of 1,000,000 new numbers, for its RSS growth, its state on disk per number and the
rebuild of that table from its changelog (see bench/state_run.py).
Exit status 1 when the contenders did not make the same decisions, 2 when a run failed.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import report
from bench.contenders import NAMES, SHIPPED
from bench.measure import compare
from bench.progress import Progress
from bench.runs import ContenderFailed, Options, paced_run, throughput_run
from bench.state_run import state_run
from bench.workload import ZIPF_EXPONENT, UniqueWorkload, generate

FULL = {"events": 1_000_000, "numbers": 200_000, "duration": 60.0, "state_numbers": 1_000_000}
QUICK = {"events": 15_000, "numbers": 3_000, "duration": 10.0, "state_numbers": 20_000}

EXTERNAL_WARNING = """\
KAFKA_BOOTSTRAP_SERVERS is set ({servers}). On that cluster the benchmark would write
its four automations to sms.automations and its triggers, for random valid Danish
numbers, to sms.triggers, where any sms-cooldown worker and gateway connector running
there would act on them. Unset KAFKA_BOOTSTRAP_SERVERS to use the embedded broker, or
pass --external-kafka on a cluster meant for this."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['events']:,} triggers over {QUICK['numbers']:,} numbers, "
                        f"a {QUICK['duration']:.0f} s paced run, no rebuild (about a minute)")
    p.add_argument("--events", type=int, help=f"triggers (default {FULL['events']:,})")
    p.add_argument("--numbers", type=int, help=f"distinct numbers (default {FULL['numbers']:,})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--contenders", default=",".join(NAMES),
                   help=f"comma-separated, from {', '.join(NAMES)} (default: all)")
    p.add_argument("--rate", type=float,
                   help="triggers/s of the paced run (default: half the shipped worker's "
                        "measured events/s)")
    p.add_argument("--duration", type=float, help="seconds of the paced run "
                   f"(default {FULL['duration']:.0f}, quick {QUICK['duration']:.0f})")
    p.add_argument("--latency-contenders", default=None,
                   help="contenders of the paced run, or 'all' (default: all at the full "
                        "size, sms-cooldown with --quick); one that decided slower than the "
                        "rate is skipped")
    p.add_argument("--no-latency", action="store_true", help="skip the paced run")
    p.add_argument("--recovery", action=argparse.BooleanOptionalAction, default=None,
                   help="time the rebuild of the shipped worker's table from its changelog "
                        "(default: on, off with --quick; the state run rebuilds its table "
                        "unless --no-recovery)")
    p.add_argument("--state-run", type=int, metavar="N",
                   help="the state run: the shipped worker alone on one trigger for each of "
                        "N new numbers, for RSS growth, state bytes per number and the "
                        "rebuild of N numbers (default: a run of "
                        f"{FULL['state_numbers']:,} after the others at the full size, none "
                        f"with --quick unless asked; 0: none)")
    p.add_argument("--state-only", action="store_true",
                   help="only the state run (default N "
                        f"{FULL['state_numbers']:,}, {QUICK['state_numbers']:,} with --quick)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch", type=int, default=5000, help="plain-confluent's batch size")
    p.add_argument("--json", type=Path, help="write the figures to this file")
    p.add_argument("--plot", type=Path, help="draw them to this PNG")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record each throughput run with py-spy into DIR (the sampling "
                        "costs CPU: such figures do not compare with unprofiled runs)")
    p.add_argument("--profile-format", choices=["flamegraph", "speedscope", "raw"],
                   default="flamegraph")
    p.add_argument("--keep", action="store_true",
                   help="keep the work folder (logs, data folders) and print its path")
    p.add_argument("--external-kafka", action="store_true",
                   help="allow running on KAFKA_BOOTSTRAP_SERVERS: the contenders share that "
                        "cluster, one after the other, with topics and groups of their own "
                        "(the shipped worker's topic names are fixed: it uses sms.triggers, "
                        "sms.decisions and sms.outbox, from where they end now)")
    return p


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    events = args.events or size["events"]
    numbers = args.numbers or size["numbers"]
    duration = args.duration or size["duration"]
    recovery = args.recovery if args.recovery is not None else not args.quick
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        print(f"unknown contender(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}",
              file=sys.stderr)
        return 2
    state_numbers = _state_numbers(args, names)
    if state_numbers < 0:
        print("--state-run takes a number of numbers, 0 or more", file=sys.stderr)
        return 2
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None
    if external and not args.external_kafka:
        print(EXTERNAL_WARNING.format(servers=external), file=sys.stderr)
        return 2
    # Also SIGINT: a shell that starts us in the background may have it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    work_dir = Path(tempfile.mkdtemp(prefix="sms-bench-"))
    opts = Options(args.partitions, args.batch, work_dir, external, uuid.uuid4().hex[:8],
                   args.profile, args.profile_format)
    failed = False
    try:
        status = _run(args, opts, names, events, numbers, duration, recovery, state_numbers)
        failed = status == 2
        return status
    except ContenderFailed as exc:
        failed = True  # its logs are in the work folder
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep or failed:
            print(f"work folder kept: {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


def _state_numbers(args: argparse.Namespace, names: list[str]) -> int:
    """How many numbers the state run takes; 0: no state run."""
    size = QUICK if args.quick else FULL
    if args.state_only:
        return args.state_run or size["state_numbers"]
    if args.state_run is not None:
        return args.state_run
    return 0 if args.quick or SHIPPED not in names else FULL["state_numbers"]


def _run(args: argparse.Namespace, opts: Options, names: list[str], events: int,
         numbers: int, duration: float, recovery: bool, state_numbers: int) -> int:
    document: dict = {"machine": report.machine(), "params": {}, "contenders": {},
                      "latency": {}, "recovery": {}, "same_decisions": True}
    if not args.state_only:
        _contender_runs(args, opts, names, events, numbers, duration, recovery, document)
        gc.collect()  # the workload's records are no longer needed
    document["params"].update({"seed": args.seed, "partitions": opts.partitions,
                               "quick": args.quick, "profiled": bool(opts.profile_dir),
                               "broker": "external" if opts.external
                               else "embedded (Tansu), one per run",
                               "state_only": args.state_only,
                               "state_run_numbers": state_numbers})
    status = 0 if document["same_decisions"] else 1
    if state_numbers:
        state = _state_run(args, opts, state_numbers, args.recovery is not False)
        document["state_run"] = state
        if "failed" in state:
            status = 2
        elif not state["decided_as_expected"]:
            status = max(status, 1)
    if not args.state_only:
        print(f"\nsame decisions: {'yes' if document['same_decisions'] else 'NO'}")

    if args.json:
        report.write_json(args.json, document)
        print(f"figures written to {args.json}")
    if args.plot:
        if document["contenders"]:
            report.plot(args.plot, document)
            print(f"plot drawn to {args.plot}")
        else:
            print("no plot: the state run alone has nothing to draw")
    return status


def _contender_runs(args: argparse.Namespace, opts: Options, names: list[str], events: int,
                    numbers: int, duration: float, recovery: bool, document: dict) -> None:
    """The throughput runs of every contender, the paced runs and the rebuild; prints
    their tables and fills the document."""
    where = f"Kafka at {opts.external}" if opts.external else "a fresh embedded broker each"
    print(f"sms-cooldown benchmark: {events:,} triggers over {numbers:,} numbers "
          f"(Zipf {ZIPF_EXPONENT}), {opts.partitions} partitions, on {where}", flush=True)
    progress = Progress("making the workload", events)
    # A million records and their expected decisions: the collector would only slow it.
    gc.disable()
    try:
        work = generate(events, numbers, args.seed, int(time.time() * 1000), progress.update)
    finally:
        gc.enable()
    progress.update(events)
    progress.close()
    print(f"  {work.distinct_numbers:,} numbers hit; expected: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(work.expected_outcomes.items())),
          flush=True)

    results: dict[str, dict] = {}
    tallies = {}
    for name in names:
        print(f"\n{name}:", flush=True)
        results[name], tallies[name] = throughput_run(name, work, opts, recovery)
        r = results[name]
        print(f"  {r['events_per_s']:,.0f} events/s ({r['seconds']:.1f} s after a "
              f"{r['startup_s']:.1f} s start-up)", flush=True)
    same, lines = compare(tallies, work.expected_outcomes, work.expected_passed)
    print("\nsame decisions (each against the rule run over the input in order):")
    print("\n".join(lines))

    latency = {}
    if not args.no_latency:
        latency = _paced_runs(args, opts, work, results, names, duration)

    print(f"\n{events:,} triggers over {work.distinct_numbers:,} numbers, "
          f"{opts.partitions} partitions:")
    print(report.throughput_table(results))
    if latency:
        print("\npaced run, decision latency (trigger timestamp -> decision timestamp):")
        print(report.latency_table(latency))
    recovery_figures = results.get(SHIPPED, {}).pop("recovery", None)
    if recovery_figures:
        ready = latency.get(SHIPPED, {}).get("ready_after_start_s")
        print()
        print(report.recovery_lines(recovery_figures, ready))

    document["params"] = {"events": events, "numbers": numbers,
                          "distinct_numbers": work.distinct_numbers, "seed": args.seed,
                          "zipf_exponent": ZIPF_EXPONENT, "partitions": opts.partitions,
                          "quick": args.quick, "plain_batch": opts.batch,
                          "profiled": bool(opts.profile_dir),
                          "broker": "external" if opts.external
                          else "embedded (Tansu), one per run",
                          "expected_outcomes": dict(work.expected_outcomes)}
    document.update({"contenders": results, "latency": latency,
                     "recovery": recovery_figures or {}, "same_decisions": same})


def _state_run(args: argparse.Namespace, opts: Options, count: int, rebuild: bool) -> dict:
    """The state run, printed; a failed one gives {"failed": why} (its logs are kept)."""
    where = f"Kafka at {opts.external}" if opts.external else "a fresh embedded broker"
    print(f"\nstate run: {SHIPPED} alone, one trigger for each of {count:,} new numbers, "
          f"{opts.partitions} partitions, on {where}", flush=True)
    work = UniqueWorkload.make(count, args.seed, int(time.time() * 1000))
    try:
        figures = state_run(work, opts, rebuild)
    except ContenderFailed as exc:
        print(f"\nstate run failed: {exc}", file=sys.stderr)
        return {"contender": SHIPPED, "numbers": count, "failed": str(exc).split("\n")[0]}
    print()
    print(report.state_run_lines(figures, opts.partitions))
    return figures


def _paced_runs(args: argparse.Namespace, opts: Options, work: object, results: dict,
                names: list[str], duration: float) -> dict[str, dict]:
    measured = results.get(SHIPPED) or next(iter(results.values()))
    rate = args.rate or round(measured["events_per_s"] / 2)
    if args.latency_contenders in (None, "") and args.quick:
        wanted = [SHIPPED] if SHIPPED in names else names[:1]
    elif args.latency_contenders in (None, "", "all"):
        wanted = names
    else:
        wanted = [n.strip() for n in args.latency_contenders.split(",") if n.strip()]
    latency: dict[str, dict] = {}
    for name in wanted:
        capacity = results.get(name, {}).get("events_per_s")
        if capacity is not None and capacity < rate * 1.1:
            latency[name] = {"rate_per_s": rate,
                             "skipped": f"its {capacity:,.0f} events/s cannot keep up"}
            continue
        print(f"\n{name}, paced at {rate:,.0f} triggers/s for {duration:.0f} s:", flush=True)
        latency[name] = paced_run(name, work, opts, rate, duration)  # type: ignore[arg-type]
    return latency


if __name__ == "__main__":
    sys.exit(main())
