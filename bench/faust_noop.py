"""A Faust agent that does nothing with its events: what Faust's stream alone costs.

Run by `python -m bench.faust_ceiling` as `python -m faust -A bench.faust_noop worker`,
configured by BENCH_BOOTSTRAP_SERVERS, BENCH_APP_ID, BENCH_DATA_DIR, BENCH_TOPIC,
BENCH_EVENTS, BENCH_MODE (`events`: one event at a time; `take`:
`stream.take_events(2000, within=0.05)`) and BENCH_STATS_FILE, where it writes how many
events it read and in how many seconds, from the first one, then exits.
"""

import json
import os
import time

import faust

from bench.outputs import SHIPPED

EVENTS = int(os.environ["BENCH_EVENTS"])
MODE = os.environ.get("BENCH_MODE", "events")

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-faust-noop"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP_SERVERS', '127.0.0.1:9092')}",
    store="memory://",
    datadir=os.environ.get("BENCH_DATA_DIR", "noop-data"),
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=SHIPPED.session_timeout_s,
    broker_rebalance_timeout=SHIPPED.rebalance_timeout_s,
    broker_heartbeat_interval=SHIPPED.heartbeat_interval_s,
    broker_commit_interval=SHIPPED.commit_interval_s,
)
source = app.topic(os.environ.get("BENCH_TOPIC", "bench.noop"), key_type=bytes,
                   value_type=bytes)
_read = {"events": 0, "since": 0.0}


def _count(n: int) -> None:
    if not _read["events"]:
        _read["since"] = time.monotonic()
    _read["events"] += n
    if _read["events"] >= EVENTS:
        seconds = time.monotonic() - _read["since"]
        with open(os.environ["BENCH_STATS_FILE"], "w") as out:
            json.dump({"events": _read["events"], "seconds": seconds}, out)
        os._exit(0)  # the figure is taken; a clean shutdown would only add to the wait


@app.agent(source)
async def noop(stream: faust.StreamT[bytes]) -> None:
    if MODE == "take":
        async for events in stream.take_events(2000, within=0.05):
            _count(len(events))
    else:
        async for _event in stream.events():
            _count(1)
