"""The three contenders: how each is started, what it reads and writes, where its
state lives; and the process that runs one, with its peak RSS sampled.

- `sms-cooldown`: the shipped worker, `python -m smscool.cli worker` (RocksDB store,
  its own data folder). Fixed topic names: sms.triggers in, sms.decisions and
  sms.outbox out, through its internal sms-cooldown-by-number topic.
- `textbook-faust`: `python -m faust -A bench.textbook_faust worker`.
- `plain-confluent`: `python -m bench.plain_confluent`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from streams import topics
from streams.topics import TopicSpec

SHIPPED = "sms-cooldown"
TEXTBOOK = "textbook-faust"
PLAIN = "plain-confluent"
NAMES = (SHIPPED, TEXTBOOK, PLAIN)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_env() -> dict[str, str]:
    """This environment, with the project importable from a child process."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ,
            "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}".rstrip(os.pathsep)}


@dataclass(frozen=True)
class Topics:
    triggers: str
    decisions: str
    outbox: str


@dataclass(frozen=True)
class Contender:
    name: str
    bootstrap: str
    app_id: str
    topics: Topics
    partitions: int
    data_dir: Path
    log_path: Path
    stats_path: Path  # where our own contenders note their first read
    batch: int = 5000

    def command(self) -> list[str]:
        if self.name == SHIPPED:
            return [sys.executable, "-m", "smscool.cli", "worker"]
        if self.name == TEXTBOOK:
            return [sys.executable, "-m", "faust", "-A", "bench.textbook_faust", "worker",
                    "-l", "info"]
        return [sys.executable, "-m", "bench.plain_confluent"]

    def env(self) -> dict[str, str]:
        env = project_env()
        if self.name == SHIPPED:
            return {**env, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                    "SMSCOOL_APP_ID": self.app_id, "SMSCOOL_DATA_DIR": str(self.data_dir),
                    "SMSCOOL_PARTITIONS": str(self.partitions), "SMSCOOL_LOG_LEVEL": "INFO",
                    "SMSCOOL_METRICS_PORT": "0"}
        return {**env, "BENCH_BOOTSTRAP_SERVERS": self.bootstrap, "BENCH_APP_ID": self.app_id,
                "BENCH_DATA_DIR": str(self.data_dir), "BENCH_PARTITIONS": str(self.partitions),
                "BENCH_TRIGGERS_TOPIC": self.topics.triggers,
                "BENCH_DECISIONS_TOPIC": self.topics.decisions,
                "BENCH_OUTBOX_TOPIC": self.topics.outbox,
                "BENCH_STATS_FILE": str(self.stats_path), "BENCH_BATCH": str(self.batch)}

    def topic_specs(self) -> list[TopicSpec]:
        """The topics the harness creates before it preloads the input."""
        if self.name == SHIPPED:
            return topics.topic_specs(self.app_id, self.partitions)
        specs = [TopicSpec(name, self.partitions) for name in (
            self.topics.triggers, self.topics.decisions, self.topics.outbox)]
        if self.name == PLAIN:
            specs.append(TopicSpec(f"{self.app_id}-last_sent-changelog", self.partitions,
                                   compacted=True))
        return specs

    def state_paths(self) -> list[Path]:
        """The RocksDB folders of its table (Faust: one per partition)."""
        if self.name == PLAIN:
            return [self.data_dir / "last_sent.db"]
        return sorted(p for p in self.data_dir.glob("**/last_sent-*.db") if p.is_dir())


def contender(name: str, bootstrap: str, work_dir: Path, partitions: int,
              shared_kafka_tag: str | None = None, suffix: str = "", batch: int = 5000
              ) -> Contender:
    """A contender's configuration. On a broker of its own (`shared_kafka_tag` None)
    it uses the project's topic names; on a given Kafka our own contenders get topics
    and app ids of their own, and the shipped worker an app id of its own."""
    if shared_kafka_tag is None:
        app_id = {SHIPPED: "sms-cooldown", TEXTBOOK: "bench-textbook-faust",
                  PLAIN: "bench-plain-confluent"}[name]
        names = Topics(topics.TRIGGERS, topics.DECISIONS, topics.OUTBOX)
    else:
        app_id = f"bench-{shared_kafka_tag}-{name}"
        names = Topics(topics.TRIGGERS, topics.DECISIONS, topics.OUTBOX) if name == SHIPPED \
            else Topics(*(f"bench.{shared_kafka_tag}.{name}.{t}"
                          for t in ("triggers", "decisions", "outbox")))
    base = work_dir / f"{name}{suffix}"
    return Contender(name, bootstrap, app_id, names, partitions, base / "data",
                     work_dir / f"{name}{suffix}.log", base / "stats.json", batch)


class Sampler:
    """Samples a process (with its children) every 0.2 s in a thread: the peak RSS and
    the CPU seconds used so far."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.cpu_samples: list[tuple[int, float]] = []  # (epoch ms, CPU seconds so far)
        self._running = threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while self._running.is_set():
            total, cpu = 0, 0.0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in tree:
                try:
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            self.cpu_samples.append((int(time.time() * 1000), cpu))
            self.peak_rss = max(self.peak_rss, total, high_water_mark(self.pid))
            time.sleep(0.2)

    def stop(self) -> None:
        self.peak_rss = max(self.peak_rss, high_water_mark(self.pid))
        self._running.clear()
        self._thread.join(timeout=2)


class ContenderProcess:
    """One contender process in a session of its own, its output in its log file, its
    RSS and CPU time sampled."""

    def __init__(self, spec: Contender) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ms = 0
        self.sampler: Sampler | None = None

    @property
    def peak_rss(self) -> int:
        return self.sampler.peak_rss if self.sampler else 0

    @property
    def cpu_samples(self) -> list[tuple[int, float]]:
        return self.sampler.cpu_samples if self.sampler else []

    def start(self) -> ContenderProcess:
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as log:
            self.started_ms = int(time.time() * 1000)
            self.process = subprocess.Popen(
                self.spec.command(), env=self.spec.env(), cwd=PROJECT_ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.sampler = Sampler(self.process.pid)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (a clean shutdown that closes RocksDB), SIGKILL after `timeout_s`."""
        if self.process is None:
            return
        if self.alive():
            assert self.sampler is not None
            self.sampler.stop()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        elif self.sampler is not None:
            self.sampler.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.spec.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def tree_rss(pid: int) -> int:
    """The RSS of a process and all its children now, in bytes (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of one process (VmHWM), in bytes; 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
