"""`python -m bench.faust_ceiling`: how many events/s Faust's stream delivers to an agent
that does nothing with them — the most any Faust agent can decide here.

    python -m bench.faust_ceiling                 # 200,000 events, 4 partitions
    python -m bench.faust_ceiling --events 50000

Preloads a topic on a fresh embedded broker with records of a trigger's size, then runs
`bench/faust_noop.py` on it twice: taking one event at a time, and in batches
(`stream.take_events`). Prints events/s from the first event read to the last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.contenders import project_env
from bench.workload import produce_records
from streams.broker import EmbeddedBroker
from streams.kafka import ensure_topics
from streams.topics import TopicSpec

TOPIC = "bench.noop"
VALUE = b"x" * 120  # about a trigger's Avro size in the benchmark


def run_noop(bootstrap: str, mode: str, events: int, work: Path) -> float:
    stats = work / f"{mode}.json"
    env = {**project_env(), "BENCH_BOOTSTRAP_SERVERS": bootstrap,
           "BENCH_APP_ID": f"bench-noop-{mode}", "BENCH_DATA_DIR": str(work / mode),
           "BENCH_TOPIC": TOPIC,
           "BENCH_EVENTS": str(events), "BENCH_MODE": mode, "BENCH_STATS_FILE": str(stats)}
    with (work / f"{mode}.log").open("wb") as log:
        done = subprocess.run([sys.executable, "-m", "faust", "-A", "bench.faust_noop",
                               "worker", "-l", "warn"], env=env, stdout=log, stderr=log,
                              timeout=900)
    if done.returncode != 0 or not stats.exists():
        raise SystemExit(f"the {mode} run failed; see {work / f'{mode}.log'}")
    figures = json.loads(stats.read_text())
    return figures["events"] / figures["seconds"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.faust_ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=4)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-faust-ceiling-") as folder:
        work = Path(folder)
        broker = EmbeddedBroker(log=(work / "broker.log").open("wb")).start()
        try:
            ensure_topics(broker.bootstrap_servers, [TopicSpec(TOPIC, args.partitions)])
            print(f"preloading {args.events:,} records of {len(VALUE)} bytes "
                  f"over {args.partitions} partitions", flush=True)
            produce_records(broker.bootstrap_servers, TOPIC,
                            [(b"+45%08d" % (i % 200_000), VALUE) for i in range(args.events)])
            print("agent doing nothing with its events      events/s")
            for mode, label in (("events", "one event at a time"),
                                ("take", "stream.take_events(2000, within=0.05)")):
                rate = run_noop(broker.bootstrap_servers, mode, args.events, work)
                print(f"{label:<40} {rate:>9,.0f}", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
