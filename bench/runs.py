"""The benchmark's runs: throughput on the preloaded workload (one contender at a time,
each on a fresh embedded broker), the rebuild of the shipped worker's table from its
changelog, and a paced run at a fixed rate for decision latency.

How the figures are taken:
- events/s: N / (last output - first read). The last output is the largest Kafka
  timestamp among the contender's decisions and send requests (the CreateTime its
  producer stamped when it produced the record; the acknowledgement follows within
  milliseconds). The first read is the moment the contender read its first trigger:
  our own contenders note it in a file; for the shipped worker it is the timestamp of
  the first record its normalize step wrote to sms-cooldown-by-number, which it
  produces as soon as it has read (and normalized) the first trigger. Start-up (group
  join, catalog load) is thus left out for all three, and reported apart.
- peak RSS: the largest sum of the RSS of the contender's process and its children,
  sampled every 0.2 s, or the kernel's VmHWM of the process if larger.
- state bytes per number: after the contender stopped, each of its RocksDB folders is
  opened, compacted (`compact_range`) and closed; the files (but RocksDB's text logs)
  are added up and divided by the distinct numbers of the workload.
- CPU: CPU seconds per wall second of the contender (and of the embedded broker)
  between the first read and the last output, from the same 0.2 s samples; 100 % is
  one core.
- latency: triggers produced at a fixed rate with the current time as Kafka timestamp
  (linger.ms=0); latency = the decision record's timestamp - the trigger's. Every
  contender decides in event time, so the decision's `decided_at_ms` is the trigger's
  timestamp and no lookup is needed. The embedded broker answers a fetch that found
  nothing only when the consumer's fetch wait has run out, even if records arrive
  meanwhile, so on it latency depends on each consumer's fetch wait (Faust's aiokafka
  consumer: 1.5 s, fixed in Faust; plain-confluent: 20 ms).

On a Kafka given by KAFKA_BOOTSTRAP_SERVERS (with --external-kafka) the contenders
share the cluster, one after the other: our own contenders get topics and groups named
after the run; the shipped worker's topic names are fixed, so it gets a group of its
own whose offsets are first set to where sms.triggers (and its other inputs) end, and
its outputs are read from where sms.decisions and sms.outbox end at its start. Any
other client writing to those topics at the same time spoils its figures, and any
sms-cooldown worker already running there decides the benchmark's triggers too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition

from bench.contenders import (
    SHIPPED,
    Contender,
    ContenderProcess,
    Sampler,
    Topics,
    contender,
)
from bench.measure import (
    Tally,
    compacted_state_size,
    cpu_share,
    events_per_s,
    latency_summary,
    log_span_s,
    max_per_second,
    per_second_counts,
)
from bench.progress import Progress
from bench.workload import (
    AUTOMATION_MIX,
    Workload,
    paced_triggers,
    produce_records,
    sentinel_trigger,
    terms_of,
)
from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.broker import EmbeddedBroker
from streams.ingest import group_id as ingest_group
from streams.kafka import ensure_topics, iter_records, producer
from streams.rule import NumberState, decide, decision_id_for

STALL_S = 120.0  # no new output for this long: the contender is stuck


class ContenderFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    partitions: int
    batch: int
    work_dir: Path
    external: str | None  # KAFKA_BOOTSTRAP_SERVERS, when the user gave one
    tag: str  # names this invocation's topics and groups on a given Kafka
    profile_dir: Path | None = None  # py-spy each throughput run into this folder
    profile_format: str = "flamegraph"


@dataclass
class Kafka:
    bootstrap: str
    sampler: Sampler | None  # the embedded broker's CPU and RSS; None for a given Kafka


@contextmanager
def kafka_for(label: str, opts: Options) -> Iterator[Kafka]:
    """A fresh embedded broker for one run, or the Kafka the user gave."""
    if opts.external:
        yield Kafka(opts.external, None)
        return
    log = (opts.work_dir / f"broker-{label}.log").open("wb")
    broker = EmbeddedBroker(log=log).start()
    process = getattr(broker, "_process", None)
    sampler = Sampler(process.pid) if process is not None else None
    try:
        yield Kafka(broker.bootstrap_servers, sampler)
    finally:
        if sampler is not None:
            sampler.stop()
        broker.stop()
        log.close()


def _reader_consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = _reader_consumer(bootstrap)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
    finally:
        consumer.close()


class OutputReader:
    """Reads a contender's decisions and send requests as they come, keeping the raw
    records (decoding waits until the contender is done, to leave it the CPU)."""

    def __init__(self, bootstrap: str, names: Topics, from_end: bool) -> None:
        self.consumer = _reader_consumer(bootstrap)
        self.decisions: list[tuple[int, bytes]] = []  # (Kafka timestamp, value)
        self.outbox: list[tuple[int, bytes]] = []
        self._topics = {names.decisions: self.decisions, names.outbox: self.outbox}
        assignment = []
        for topic in self._topics:
            # On a Kafka of our own the topics are new; on a given one, start where
            # they end now (its watermarks are right, unlike the embedded broker's).
            ends = _end_offsets(bootstrap, topic) if from_end else None
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, ends[p] if ends else 0) for p in partitions]
        self.consumer.assign(assignment)
        self.last_new = time.monotonic()

    def poll(self, timeout_s: float = 0.2) -> int:
        batch = self.consumer.consume(10_000, timeout=timeout_s)
        for message in batch:
            if message.error():
                continue
            self._topics[message.topic()].append((message.timestamp()[1], message.value()))
        if batch:
            self.last_new = time.monotonic()
        return len(batch)

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Collected:
    tally: Tally = field(default_factory=Tally)
    outbox_ids: set[str] = field(default_factory=set)
    decoded: int = 0
    decoded_outbox: int = 0


def _collect(proc: ContenderProcess, reader: OutputReader, expected: int, prefix: str,
             label: str) -> Collected:
    """Read until every expected event has its decision and every pass its send request."""
    got = Collected()
    progress = Progress(label, expected)
    try:
        while True:
            reader.poll()
            progress.update(len(reader.decisions))
            if len(reader.decisions) >= expected:
                for _, value in reader.decisions[got.decoded:]:
                    decision = codecs.DECISION.decode(value)
                    if decision["event_id"].startswith(prefix):
                        got.tally.add(decision)
                got.decoded = len(reader.decisions)
                for _, value in reader.outbox[got.decoded_outbox:]:
                    got.outbox_ids.add(codecs.SEND_REQUEST.decode(value)["decision_id"])
                got.decoded_outbox = len(reader.outbox)
                if (len(got.tally.decided) >= expected
                        and got.outbox_ids >= got.tally.passed_decision_ids):
                    return got
            if not proc.alive():
                raise ContenderFailed(f"{proc.spec.name} exited with {proc.process.returncode}"
                                      f" after {len(reader.decisions):,} decisions")
            if time.monotonic() - reader.last_new > STALL_S:
                raise ContenderFailed(f"{proc.spec.name}: no output for {STALL_S:.0f} s after "
                                      f"{len(reader.decisions):,} decisions")
    finally:
        progress.close()


def _first_timestamp(bootstrap: str, topic: str, start: dict[int, int] | None) -> int | None:
    """The smallest Kafka timestamp among the first records of a topic's partitions."""
    consumer = _reader_consumer(bootstrap)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, (start or {}).get(p, 0)) for p in partitions])
        first: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while len(first) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if not message.error():
                    first.setdefault(message.partition(), message.timestamp()[1])
        return min(first.values()) if first else None
    finally:
        consumer.close()


def _move_group_to_end(bootstrap: str, group: str, names: list[str]) -> None:
    """On a given Kafka, start the shipped worker's new group where its input topics end
    now, so that it reads only this run's triggers."""
    offsets = [TopicPartition(topic, p, end) for topic in names
               for p, end in _end_offsets(bootstrap, topic).items()]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def _prepare(spec: Contender, work: Workload, opts: Options) -> None:
    ensure_topics(spec.bootstrap, spec.topic_specs())
    if spec.name == SHIPPED:
        for automation in work.automations:
            publish_automation(spec.bootstrap, automation)
        if opts.external:
            # Ingest reads the inputs in a group of its own; the cooldown agent the bundles.
            _move_group_to_end(spec.bootstrap, ingest_group(spec.app_id),
                               [topics.TRIGGERS, topics.SENT, topics.DELIVERY])
            _move_group_to_end(spec.bootstrap, spec.app_id, [topics.BY_NUMBER])


def _first_read_ms(spec: Contender, by_number_start: dict[int, int] | None,
                   first_decision_ms: int) -> int:
    if spec.name == SHIPPED:
        first = _first_timestamp(spec.bootstrap, topics.BY_NUMBER, by_number_start)
    else:
        try:
            first = json.loads(spec.stats_path.read_text())["first_read_ms"]
        except (OSError, ValueError, KeyError):
            first = None
    return min(first or first_decision_ms, first_decision_ms)


def throughput_run(name: str, work: Workload, opts: Options,
                   recovery: bool) -> tuple[dict, Tally]:
    """Preload the workload on a fresh broker, run one contender through it, measure."""
    with kafka_for(name, opts) as kafka, ExitStack() as stack:
        bootstrap = kafka.bootstrap
        spec = contender(name, bootstrap, opts.work_dir, opts.partitions,
                         opts.tag if opts.external else None, batch=opts.batch)
        _prepare(spec, work, opts)
        by_number_start = _end_offsets(bootstrap, topics.BY_NUMBER) \
            if opts.external and name == SHIPPED else None
        reader = OutputReader(bootstrap, spec.topics, from_end=bool(opts.external))
        stack.callback(reader.close)
        progress = Progress(f"preload for {name}", len(work.records))
        produce_records(bootstrap, spec.topics.triggers, work.records, progress.update)
        progress.close()

        proc = ContenderProcess(spec).start()
        stack.callback(proc.stop)
        profiler = _profile(proc, opts) if opts.profile_dir else None
        if profiler is not None:
            stack.callback(_stop_profiler, profiler)
        harness = psutil.Process()
        harness_cpu = sum(harness.cpu_times()[:2])
        try:
            got = _collect(proc, reader, work.events, f"b{work.seed}-", f"{name} decided")
        except ContenderFailed as exc:
            raise ContenderFailed(f"{exc}\n--- {spec.log_path}\n{proc.log_tail()}") from None
        done_ms = int(time.time() * 1000)
        # The harness reads the outputs while the contender runs (and decodes them at
        # the end): its own CPU share, to see how much it took from the machine.
        harness_cpu = (sum(harness.cpu_times()[:2]) - harness_cpu) / max(
            0.001, (done_ms - proc.started_ms) / 1000)
        proc.stop()
        first_decision = min(ts for ts, _ in reader.decisions)
        last_output = max(ts for ts, _ in reader.decisions + reader.outbox)
        first_read = _first_read_ms(spec, by_number_start, first_decision)
        state = compacted_state_size(spec.state_paths())
        result = {
            "events": work.events,
            "events_per_s": round(events_per_s(work.events, first_read, last_output), 1),
            "seconds": round((last_output - first_read) / 1000, 3),
            "startup_s": round((first_read - proc.started_ms) / 1000, 3),
            "wall_s": round((done_ms - proc.started_ms) / 1000, 3),
            "peak_rss_bytes": proc.peak_rss,
            "cpu_share": cpu_share(proc.cpu_samples, first_read, last_output),
            "broker_cpu_share": cpu_share(kafka.sampler.cpu_samples, first_read, last_output)
            if kafka.sampler else None,
            "harness_cpu_share": round(harness_cpu, 3),
            "state_bytes": state.bytes,
            "state_sst_bytes": state.sst_bytes,
            "state_keys": state.keys,
            "state_bytes_per_number": round(state.bytes / max(1, work.distinct_numbers), 1),
            "decision_records": len(reader.decisions),
            "send_requests": len(got.outbox_ids),
            "repeated_decisions": got.tally.repeated,
            "timeline": per_second_counts([ts for ts, _ in reader.decisions], first_read),
        }
        if recovery and name == SHIPPED:
            result["recovery"] = recovery_run(spec, reader, work, opts)
        return result, got.tally


def _profile(proc: ContenderProcess, opts: Options) -> subprocess.Popen[bytes]:
    """py-spy, sampling the contender from outside until it exits (it costs CPU of its
    own: figures of a profiled run do not compare with others)."""
    assert proc.process is not None and opts.profile_dir is not None
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[opts.profile_format]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    log = (opts.work_dir / f"py-spy-{proc.spec.name}.log").open("wb")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(proc.process.pid), "--rate", "100", "--nonblocking",
         "--subprocesses",
         "--format", opts.profile_format,
         "--output", str(opts.profile_dir / f"{proc.spec.name}.{suffix}")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """py-spy writes its file once the contender has exited; then it ends by itself."""
    try:
        profiler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        profiler.terminate()
        profiler.wait()


def _hottest_number(work: Workload) -> str:
    counts: dict[bytes, int] = {}
    for key, _, _ in work.records:
        counts[key] = counts.get(key, 0) + 1
    return max(counts, key=counts.__getitem__).decode()


def _produce_now(bootstrap: str, topic: str, key: bytes, value: bytes) -> int:
    at_ms = int(time.time() * 1000)
    out = producer(bootstrap, **{"linger.ms": 0})
    out.produce(topic, key=key, value=value, timestamp=at_ms)
    if out.flush(30) != 0:
        raise ContenderFailed(f"a probe trigger was not acknowledged on {topic}")
    return at_ms


def _wait_for_event(proc: ContenderProcess, reader: OutputReader, event_id: str,
                    timeout_s: float, log_line: str | None = None) -> tuple[dict, int, int | None]:
    """The decision for one event, its Kafka timestamp, and when `log_line` first
    appeared in the contender's log (harness clock, ms), if asked."""
    seen = len(reader.decisions)
    line_ms = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reader.poll(0.1)
        if log_line and line_ms is None and log_line in proc.log_tail(1_000_000):
            line_ms = int(time.time() * 1000)
        for ts, value in reader.decisions[seen:]:
            decision = codecs.DECISION.decode(value)
            if decision["event_id"] == event_id:
                return decision, ts, line_ms
        seen = len(reader.decisions)
        if not proc.alive():
            break
    raise ContenderFailed(f"{proc.spec.name}: no decision for {event_id} in {timeout_s:.0f} s"
                          f"\n--- {proc.spec.log_path}\n{proc.log_tail()}")


def recovery_run(spec: Contender, reader: OutputReader, work: Workload,
                 opts: Options) -> dict:
    """Delete the shipped worker's data folder and start a worker on the same broker:
    the time until a probe trigger sent right after the start is decided is the time
    to rebuild the table from its changelog (plus the start-up itself). The probe
    targets the workload's hottest number with the 24 h automation, so its outcome
    also shows whether the rebuilt state is right."""
    e164 = _hottest_number(work)
    return rebuild_run(spec, reader, e164, work.final_state.get(e164), work.automations,
                       work.distinct_numbers, f"r{work.seed}-probe", "the hottest number")


def rebuild_run(spec: Contender, reader: OutputReader, e164: str, state: NumberState | None,
                automations: list[Automation], numbers: int,
                event_id: str, probe: str) -> dict:
    """`recovery_run` for any workload: the probe goes to `e164`, whose state the
    worker's table held (`state`, by the rule), with the 24 h automation; `numbers` is
    how many numbers the table held, `probe` says which number it is."""
    shutil.rmtree(spec.data_dir)
    # A log of its own: its markers are looked for in it (sms-cooldown-recovery.log for
    # the throughput run's spec, sms-cooldown-state-recovery.log for the state run's).
    again = replace(spec, log_path=spec.log_path.with_name(f"{spec.log_path.stem}-recovery.log"))
    kind = next(i for i, mix in enumerate(AUTOMATION_MIX) if mix[0] == "cooldown-24h")
    key, value = sentinel_trigger(e164, event_id, kind, int(time.time() * 1000))
    proc = ContenderProcess(again).start()
    try:
        at_ms = _produce_now(spec.bootstrap, spec.topics.triggers, key, value)
        decision, decided_ms, line_ms = _wait_for_event(proc, reader, event_id, 600,
                                                        "Recovery complete")
    finally:
        proc.stop()
    terms = terms_of(automations[kind])
    expected, _ = decide(decision_id_for(event_id, terms.automation_id), terms, state, at_ms)
    # What the rebuild read: one record per table write (the embedded broker does not
    # compact); counted, since its watermarks cannot be trusted.
    changelog = sum(1 for _ in iter_records(spec.bootstrap, topics.changelog_topic(spec.app_id),
                                            idle_s=2.0, timeout_s=600))
    log = proc.log_tail(10_000_000)
    return {
        "method": "fresh data folder, same broker and app id; a probe trigger produced "
                  "right after the start; time from process start to its decision",
        "seconds_to_probe_decision": round((decided_ms - proc.started_ms) / 1000, 3),
        "seconds_to_recovery_log_line": round((line_ms - proc.started_ms) / 1000, 3)
        if line_ms else None,
        # Within that: the group join, and reading the changelog into the table.
        "seconds_joining_group": log_span_s(log, "(Re-)joining group", "Setting newly assigned"),
        "seconds_reading_changelog": log_span_s(
            log, "Restoring state from changelog topics", "Done reading from changelog topics"),
        "numbers": numbers,
        "changelog_records": changelog,
        "probe_number": probe,
        "probe_outcome": decision["outcome"],
        "probe_expected": expected.outcome,
        "peak_rss_bytes": proc.peak_rss,
    }


def paced_run(name: str, work: Workload, opts: Options, rate: float,
              duration_s: float) -> dict:
    """Start the contender on a fresh broker, wait until it decides a warm-up trigger,
    then produce triggers at `rate` per second for `duration_s` and time each decision."""
    count = max(1, int(rate * duration_s))
    with kafka_for(f"{name}-paced", opts) as kafka, ExitStack() as stack:
        bootstrap = kafka.bootstrap
        spec = contender(name, bootstrap, opts.work_dir, opts.partitions,
                         f"{opts.tag}p" if opts.external else None, suffix="-paced",
                         batch=opts.batch)
        _prepare(spec, work, opts)
        reader = OutputReader(bootstrap, spec.topics, from_end=bool(opts.external))
        stack.callback(reader.close)
        proc = ContenderProcess(spec).start()
        stack.callback(proc.stop)
        warm_id = f"w{work.seed}-warmup"
        key, value = sentinel_trigger(work.numbers[-1], warm_id, 0, int(time.time() * 1000))
        _produce_now(bootstrap, spec.topics.triggers, key, value)
        _, ready_ms, _ = _wait_for_event(proc, reader, warm_id, 300)
        triggers = paced_triggers(work, count, work.seed + 1000, int(time.time() * 1000))
        harness = psutil.Process()
        cpu_before, pace_started = sum(harness.cpu_times()[:2]), time.monotonic()
        _pace(bootstrap, spec.topics.triggers, triggers, rate, f"{name} paced")
        pace_s = time.monotonic() - pace_started
        harness_cpu = (sum(harness.cpu_times()[:2]) - cpu_before) / pace_s
        try:
            _collect(proc, reader, count, f"p{work.seed + 1000}-", f"{name} decided")
        except ContenderFailed as exc:
            raise ContenderFailed(f"{exc}\n--- {spec.log_path}\n{proc.log_tail()}") from None
        proc.stop()
        prefix = f"p{work.seed + 1000}-"
        timed = []  # (trigger timestamp, latency)
        for ts, value in reader.decisions:
            decision = codecs.DECISION.decode(value)
            if decision["event_id"].startswith(prefix):
                timed.append((decision["decided_at_ms"], ts - decision["decided_at_ms"]))
        timed.sort()
        return {
            "rate_per_s": rate, "duration_s": duration_s, "triggers": count,
            "produced_in_s": round(pace_s, 3),
            "harness_cpu_share_while_producing": round(harness_cpu, 3),
            "ready_after_start_s": round((ready_ms - proc.started_ms) / 1000, 3),
            **latency_summary(latency for _, latency in timed),
            "max_ms_per_second": max_per_second(timed),
        }


def _pace(bootstrap: str, topic: str, triggers: list[tuple[bytes, bytes]], rate: float,
          label: str) -> None:
    """Produce at `rate` per second, each with the current time as its timestamp."""
    # librdkafka's default linger (5 ms), as a real producer: with 0 every trigger is a
    # request of its own, and the embedded broker falls seconds behind at 2,000/s.
    out = producer(bootstrap, **{"linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    progress = Progress(label, len(triggers))
    started = time.monotonic()
    sent = 0
    while sent < len(triggers):
        due = min(len(triggers), int((time.monotonic() - started) * rate) + 1)
        if due <= sent:
            out.poll(0)
            time.sleep(0.0005)
            continue
        now_ms = int(time.time() * 1000)
        for key, value in triggers[sent:due]:
            out.produce(topic, key=key, value=value, timestamp=now_ms)
        sent = due
        out.poll(0)
        progress.update(sent)
    progress.close()
    if out.flush(60) != 0:
        raise ContenderFailed("paced triggers were not acknowledged within 60 s")
