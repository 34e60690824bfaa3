"""The state run: the shipped worker alone, fed one trigger for each of N new numbers
(`--state-run N`, a million by default), for what a million numbers' state costs it.

- RSS growth: the RSS of the worker and its children (summed) once it has decided the
  run's first trigger (1 s later, before the others are produced), and again the moment
  it has decided the last one and written every send request; growth = end - start.
  Also sampled at each tenth of the way, and the peak (as in the throughput run).
- state bytes per number: the worker stopped cleanly, every RocksDB folder under its
  data folder is compacted and its files added up (as `compacted_state_size` does),
  divided by N.
- rebuild: its data folder deleted, a new worker on the same broker rebuilds the table
  of N numbers from `sms-cooldown-last_sent-changelog`; timed as `recovery_run` does,
  with a probe on the last number written (its 24 h automation must be suppressed).

The triggers are made as they are produced and their outputs tallied as they come, a
byte per trigger: the harness stays small at a million. It relies only on the worker's
outside: sms.triggers in, sms.decisions and sms.outbox out, RocksDB under its data
folder, its changelog topic.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack

from bench.contenders import SHIPPED, ContenderProcess, Topics, contender, tree_rss
from bench.measure import compacted_state_size, rocksdb_folders
from bench.progress import Progress
from bench.runs import (
    STALL_S,
    ContenderFailed,
    Options,
    OutputReader,
    _prepare,
    kafka_for,
    rebuild_run,
)
from bench.workload import UniqueWorkload, produce_records
from streams import codecs
from streams.rule import PASSED

# The worker's targets for a million numbers.
TARGET_RSS_GROWTH_BYTES = 200_000_000  # below 200 MB
TARGET_STATE_BYTES_PER_NUMBER = 64  # at most
TARGET_REBUILD_S = 60.0  # at most, worker start to the probe's decision

_NOTHING = 0  # Marks.outcome: no decision yet


class Marks:
    """The run's outputs, one byte per trigger: its decision's outcome and whether its
    send request came. Outputs of other events (a probe) are counted apart."""

    def __init__(self, work: UniqueWorkload) -> None:
        self.work = work
        self.outcome = bytearray(work.count)  # 0, or 1 + index into self.names
        self.sent = bytearray(work.count)
        self.names: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.decided = 0
        self.sends = 0
        self.repeated_decisions = 0
        self.conflicting = 0  # a repeated decision with another outcome
        self.repeated_sends = 0
        self.foreign = 0  # outputs for events not of this run

    def _code(self, outcome: str) -> int:
        if outcome not in self.names:
            self.names.append(outcome)
        return self.names.index(outcome) + 1

    def decision(self, decision: dict) -> int | None:
        i = self.work.index_of_event(decision["event_id"])
        if i is None:
            self.foreign += 1
            return None
        code = self._code(decision["outcome"])
        if self.outcome[i] != _NOTHING:
            self.repeated_decisions += 1
            self.conflicting += self.outcome[i] != code
            return i
        self.outcome[i] = code
        self.outcomes[decision["outcome"]] += 1
        self.decided += 1
        return i

    def send_request(self, request: dict) -> None:
        i = self.work.index_of_event(request["event_id"])
        if i is None:
            self.foreign += 1
        elif self.sent[i]:
            self.repeated_sends += 1
        else:
            self.sent[i] = 1
            self.sends += 1

    def has_decision(self, i: int) -> bool:
        return self.outcome[i] != _NOTHING

    @property
    def complete(self) -> bool:
        """Every trigger decided, and every pass's send request written."""
        return self.decided >= self.work.count and self.sends >= self.outcomes[PASSED]

    def as_expected(self) -> bool:
        return (self.outcomes == self.work.expected_outcomes and not self.conflicting
                and self.sends == self.outcomes[PASSED])


class TallyingReader(OutputReader):
    """An OutputReader that, while `marks` is set, decodes each output as it comes and
    keeps only its mark; with `marks` None it keeps the records, as its parent does."""

    def __init__(self, bootstrap: str, names: Topics, from_end: bool, marks: Marks) -> None:
        super().__init__(bootstrap, names, from_end)
        self.marks: Marks | None = marks
        self._decisions_topic = names.decisions

    def poll(self, timeout_s: float = 0.2) -> int:
        marks = self.marks
        if marks is None:
            return super().poll(timeout_s)
        batch = self.consumer.consume(10_000, timeout=timeout_s)
        for message in batch:
            if message.error():
                continue
            if message.topic() == self._decisions_topic:
                marks.decision(codecs.DECISION.decode(message.value()))
            else:
                marks.send_request(codecs.SEND_REQUEST.decode(message.value()))
        if batch:
            self.last_new = time.monotonic()
        return len(batch)


def _failed(proc: ContenderProcess, message: str) -> ContenderFailed:
    return ContenderFailed(f"{message}\n--- {proc.spec.log_path}\n{proc.log_tail()}")


def _checkpoints(count: int) -> list[int]:
    """The decided counts at which the RSS is sampled on the way: each tenth."""
    return sorted({max(1, count * k // 10) for k in range(1, 11)})


def state_run(work: UniqueWorkload, opts: Options, rebuild: bool) -> dict:
    """Run the shipped worker through the state run's workload; its figures."""
    count = work.count
    with kafka_for("state", opts) as kafka, ExitStack() as stack:
        bootstrap = kafka.bootstrap
        spec = contender(SHIPPED, bootstrap, opts.work_dir, opts.partitions,
                         f"{opts.tag}s" if opts.external else None, suffix="-state")
        _prepare(spec, work, opts)  # it takes only the automations of a workload
        marks = Marks(work)
        reader = TallyingReader(bootstrap, spec.topics, bool(opts.external), marks)
        stack.callback(reader.close)
        proc = ContenderProcess(spec).start()
        stack.callback(proc.stop)
        assert proc.process is not None
        pid = proc.process.pid

        # Its first trigger alone: once decided, the worker is up with one number.
        produce_records(bootstrap, spec.topics.triggers, work.records(0, 1))
        deadline = time.monotonic() + 300
        while not marks.has_decision(0):
            reader.poll(0.1)
            if not proc.alive() or time.monotonic() > deadline:
                raise _failed(proc, f"{SHIPPED}: no decision for its first trigger")
        ready_ms = int(time.time() * 1000)
        time.sleep(1.0)
        rss_start = tree_rss(pid)

        produce_started = time.monotonic()
        producing = Progress("state run: producing", count)

        def produced(i: int) -> None:
            producing.update(i + 1)
            reader.poll(0)  # keep the outputs moving while it produces

        produce_records(bootstrap, spec.topics.triggers, work.records(1), produced)
        producing.update(count)
        producing.close()
        produce_s = time.monotonic() - produce_started

        rss_curve: list[tuple[int, int]] = []
        todo = _checkpoints(count)
        deciding = Progress(f"{SHIPPED} decided", count)
        reader.last_new = time.monotonic()
        try:
            while True:
                reader.poll()
                deciding.update(marks.decided)
                while todo and marks.decided >= todo[0]:
                    rss_curve.append((todo.pop(0), tree_rss(pid)))
                if marks.complete:
                    break
                if not proc.alive():
                    raise _failed(proc, f"{SHIPPED} exited with {proc.process.returncode} "
                                        f"after {marks.decided:,} decisions")
                if time.monotonic() - reader.last_new > STALL_S:
                    raise _failed(proc, f"{SHIPPED}: no output for {STALL_S:.0f} s after "
                                        f"{marks.decided:,} decisions")
        finally:
            deciding.close()
        rss_end = tree_rss(pid)
        done_ms = int(time.time() * 1000)
        proc.stop()
        folders = rocksdb_folders(spec.data_dir)
        state = compacted_state_size(folders)
        deciding_s = (done_ms - ready_ms) / 1000
        result = {
            "contender": SHIPPED,
            "numbers": count,
            "triggers": count,
            "triggers_per_number": 1,
            "method": "one trigger for each of N new numbers, produced while the worker "
                      "runs; RSS (process and children) 1 s after its first decision and "
                      "when every trigger is decided and every send request written",
            "rss_start_bytes": rss_start,
            "rss_end_bytes": rss_end,
            "rss_growth_bytes": rss_end - rss_start,
            "rss_growth_bytes_per_number": round((rss_end - rss_start) / count, 1),
            "peak_rss_bytes": proc.peak_rss,
            "rss_by_decided": rss_curve,
            "state_bytes": state.bytes,
            "state_sst_bytes": state.sst_bytes,
            "state_keys": state.keys,
            "state_folders": [str(p.relative_to(spec.data_dir)) for p in folders],
            "state_bytes_per_number": round(state.bytes / count, 1),
            "startup_s": round((ready_ms - proc.started_ms) / 1000, 3),
            "produced_in_s": round(produce_s, 3),
            "decided_in_s": round(deciding_s, 3),
            "decisions_per_s_while_fed": round(count / max(0.001, deciding_s), 1),
            "outcomes": dict(marks.outcomes),
            "expected_outcomes": dict(work.expected_outcomes),
            "send_requests": marks.sends,
            "repeated_decisions": marks.repeated_decisions,
            "repeated_send_requests": marks.repeated_sends,
            "decided_as_expected": marks.as_expected(),
        }
        if rebuild:
            reader.marks = None  # the probe's decision is looked up among the records
            last = count - 1
            result["rebuild"] = rebuild_run(
                spec, reader, work.numbers[last], work.state_of(last),
                work.automations, count, f"r{work.seed}-state-probe", "the last number written")
        result["targets"] = targets(result)
        return result


def targets(result: dict) -> dict:
    """Each target, its figure, and whether it is met (None: not measured)."""
    rebuild = result.get("rebuild") or {}
    seconds = rebuild.get("seconds_to_probe_decision")
    return {
        "rss_growth_bytes": {"below": TARGET_RSS_GROWTH_BYTES,
                             "figure": result["rss_growth_bytes"],
                             "met": result["rss_growth_bytes"] < TARGET_RSS_GROWTH_BYTES},
        "state_bytes_per_number": {"at_most": TARGET_STATE_BYTES_PER_NUMBER,
                                   "figure": result["state_bytes_per_number"],
                                   "met": result["state_bytes_per_number"]
                                   <= TARGET_STATE_BYTES_PER_NUMBER},
        "rebuild_s": {"at_most": TARGET_REBUILD_S, "figure": seconds,
                      "met": None if seconds is None else seconds <= TARGET_REBUILD_S},
        # The targets are for a million numbers: a smaller run only shows the trend.
        "at_target_size": result["numbers"] >= 1_000_000,
    }
