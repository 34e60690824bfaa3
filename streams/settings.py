"""Settings: one frozen object, read from the environment in one place.

Every process of the project (worker, CLI, demo, connector) takes its configuration
from here, so the same code runs against the embedded broker or a real Kafka.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from streams.clock import Clock
from streams.optouts import DEFAULT_STOP_KEYWORDS, parse_keywords

DEFAULT_PARTITIONS = 4
# The failures in a row a number's state keeps count of, at most.
MAX_FAILURES_TO_OPT_OUT = 20


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: dict[str, str] | os._Environ[str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def idempotent_producers(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """`SMSCOOL_IDEMPOTENCE` (default true): whether every producer of the project
    (`streams.kafka.producer`) is idempotent. Read by the producer itself, since every
    process makes one.

    Off only for a broker whose idempotence does not survive its own crash: the
    embedded broker's S3 storage records a batch's sequence number before it writes the
    batch, so a kill between the two makes the producer's retry a "duplicate" that is
    acknowledged and never written. Without idempotence a retry writes the batch (again,
    if it had been written: the pipeline's decisions are idempotent, the connector sends
    one SMS per decision id), and one request in flight keeps the partitions' order."""
    return _bool(env, "SMSCOOL_IDEMPOTENCE", True)


@dataclass(frozen=True)
class Settings:
    # Comma-separated host:port list; empty means "no broker given" and the demo
    # starts the embedded one.
    bootstrap_servers: str = ""
    app_id: str = "sms-cooldown"
    # Partition count of every E.164-keyed topic the cooldown agent reads and of its
    # table's changelog; a worker refuses to start when the topics disagree with it.
    partitions: int = DEFAULT_PARTITIONS
    data_dir: Path = Path("data")
    store: str = "rocksdb"
    # Group membership timeouts. Kafka's defaults make every join wait 30 s or more;
    # these suit a small cluster and keep failover after a crash under ten seconds.
    session_timeout_s: float = 6.0
    rebalance_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    commit_interval_s: float = 1.0
    # How long the cooldown agent's fetch of bundles may wait at the broker, and how
    # long the producers wait to fill a batch. Faust fixes the first at 1.5 s. Kafka
    # answers a fetch as soon as records come, so the wait costs nothing there; the
    # embedded broker answers only when the wait runs out, so each hop waits that long.
    # A fetch brings bundles of thousands of events, so a short wait costs no throughput.
    fetch_wait_ms: int = 20
    linger_ms: int = 5
    # Ingest: how many input records it reads per batch, how long a fetch may wait at
    # the broker (a batch is what came within it), and the largest bundle it writes
    # (keep it under the broker's message.max.bytes).
    ingest_batch: int = 5000
    ingest_fetch_wait_ms: int = 20
    bundle_max_bytes: int = 900_000
    # A trigger whose occurred_at lies further ahead of its Kafka timestamp than this
    # is rejected as dated in the future; one older than max_trigger_age as stale.
    max_clock_skew_ms: int = 5 * 60 * 1000
    max_trigger_age_ms: int = 7 * 24 * 3600 * 1000
    log_level: str = "INFO"
    # How often the cooldown agent looks for held messages that are due: a release is
    # at most about this late.
    release_tick_ms: int = 200
    # How often ingest tells the cooldown agents how far it has read each input
    # partition (`streams.ingest.Progress`): a release waits for it, so it adds about
    # this much to a release's lateness; each tick writes a record to every bundle
    # partition.
    progress_tick_ms: int = 100
    # What the release timer, ingest's progress and cancels take for now (see
    # `streams.clock`); decisions never read it.
    clock: Clock = field(default_factory=Clock)
    # The gateway connector.
    connector_data_dir: Path = Path("connector-data")
    connector_rate_per_s: float = 50.0
    connector_concurrency: int = 16
    connector_max_attempts: int = 8
    connector_timeout_s: float = 10.0
    # After a timeout or a crash mid-request the SMS may have gone out: give up (and
    # dead-letter it) rather than risk a second SMS, unless told to retry.
    connector_retry_ambiguous: bool = False
    # The connector's incoming-SMS webhook (`connectors.replies`): served when a port is
    # given (0: a free one), on loopback unless told otherwise; the replies that opt a
    # number out; the secret GatewayAPI signs its requests with, if it is given one.
    reply_port: int | None = None
    reply_host: str = "127.0.0.1"
    stop_keywords: tuple[str, ...] = DEFAULT_STOP_KEYWORDS
    reply_secret: bytes = field(default=b"", repr=False)
    # A number whose sends the gateway refused for good this many times in a row is
    # opted out (channel auto_failed_deliveries); 0, the default, never does that: a
    # misconfigured sender makes every send fail, and would opt out every number.
    opt_out_after_failures: int = 0
    # Key of the hash an erased number's opt-out is kept by (`streams.erasure`); the
    # same in every worker and in the command line. Secret: kept out of repr.
    number_secret: bytes = field(default=b"", repr=False)
    # A number's state is forgotten once it holds no message and its last SMS is older
    # than the longest cooldown of any automation and this margin (which also covers a
    # replay of the triggers since the last commit).
    retention_margin_ms: int = 86_400_000
    # `smscool web`, the REST API: where it listens (loopback unless told otherwise; 0: a
    # free port), the bearer token every write needs (secret), and whether reads from
    # loopback need none.
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_token: str = field(default="", repr=False)
    web_open_reads: bool = False
    # Prometheus metrics (`streams.metrics`) of the worker and the connector: where they
    # are served (loopback unless told otherwise); the port, None for the process's own
    # default (worker 9108, connector 9109), 0 for a free one, and off: not served.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    metrics_enabled: bool = True
    # Key for the short hashes that name phone numbers in logs. Secret: kept out of repr.
    log_hash_key: bytes = field(default_factory=lambda: secrets.token_bytes(16), repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        store = env.get("SMSCOOL_STORE", "rocksdb")
        if store not in ("rocksdb", "memory"):
            raise ValueError(f"SMSCOOL_STORE must be 'rocksdb' or 'memory', got {store!r}")
        partitions = _int(env, "SMSCOOL_PARTITIONS", DEFAULT_PARTITIONS)
        if partitions < 1:
            raise ValueError("SMSCOOL_PARTITIONS must be at least 1")
        hash_key = env.get("SMSCOOL_LOG_HASH_KEY", "")
        if _int(env, "SMSCOOL_INGEST_BATCH", 5000) < 1:
            raise ValueError("SMSCOOL_INGEST_BATCH must be at least 1")
        if _int(env, "SMSCOOL_BUNDLE_MAX_BYTES", 900_000) < 10_000:
            raise ValueError("SMSCOOL_BUNDLE_MAX_BYTES must be at least 10000")
        release_tick_ms = _int(env, "SMSCOOL_RELEASE_TICK_MS", 200)
        if not 10 <= release_tick_ms <= 60_000:
            raise ValueError("SMSCOOL_RELEASE_TICK_MS must be between 10 and 60000")
        metrics_port = env.get("SMSCOOL_METRICS_PORT", "").strip().lower()
        if metrics_port not in ("", "off") and not (
                metrics_port.isdigit() and int(metrics_port) <= 65535):
            raise ValueError("SMSCOOL_METRICS_PORT must be a port number or 'off', "
                             f"got {metrics_port!r}")
        reply_port = env.get("SMSCOOL_REPLY_PORT", "").strip()
        if reply_port and not (reply_port.isdigit() and int(reply_port) <= 65535):
            raise ValueError(f"SMSCOOL_REPLY_PORT must be a port number, got {reply_port!r}")
        retention_margin_ms = _int(env, "SMSCOOL_RETENTION_MARGIN_MS", 86_400_000)
        if retention_margin_ms < 60_000:
            raise ValueError("SMSCOOL_RETENTION_MARGIN_MS must be at least 60000")
        opt_out_after_failures = _int(env, "SMSCOOL_OPT_OUT_AFTER_FAILURES", 0)
        if not 0 <= opt_out_after_failures <= MAX_FAILURES_TO_OPT_OUT:
            raise ValueError("SMSCOOL_OPT_OUT_AFTER_FAILURES must be between 0 (never) and "
                             f"{MAX_FAILURES_TO_OPT_OUT}")
        progress_tick_ms = _int(env, "SMSCOOL_PROGRESS_TICK_MS", 100)
        if not 10 <= progress_tick_ms <= 60_000:
            raise ValueError("SMSCOOL_PROGRESS_TICK_MS must be between 10 and 60000")
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip(),
            app_id=env.get("SMSCOOL_APP_ID", "sms-cooldown"),
            partitions=partitions,
            data_dir=Path(env.get("SMSCOOL_DATA_DIR", "data")),
            store=store,
            session_timeout_s=_float(env, "SMSCOOL_SESSION_TIMEOUT_S", 6.0),
            rebalance_timeout_s=_float(env, "SMSCOOL_REBALANCE_TIMEOUT_S", 6.0),
            heartbeat_interval_s=_float(env, "SMSCOOL_HEARTBEAT_INTERVAL_S", 1.0),
            commit_interval_s=_float(env, "SMSCOOL_COMMIT_INTERVAL_S", 1.0),
            fetch_wait_ms=_int(env, "SMSCOOL_FETCH_WAIT_MS", 20),
            linger_ms=_int(env, "SMSCOOL_LINGER_MS", 5),
            ingest_batch=_int(env, "SMSCOOL_INGEST_BATCH", 5000),
            ingest_fetch_wait_ms=_int(env, "SMSCOOL_INGEST_FETCH_WAIT_MS", 20),
            bundle_max_bytes=_int(env, "SMSCOOL_BUNDLE_MAX_BYTES", 900_000),
            max_clock_skew_ms=_int(env, "SMSCOOL_MAX_CLOCK_SKEW_MS", 5 * 60 * 1000),
            max_trigger_age_ms=_int(env, "SMSCOOL_MAX_TRIGGER_AGE_MS", 7 * 24 * 3600 * 1000),
            log_level=env.get("SMSCOOL_LOG_LEVEL", "INFO").upper(),
            release_tick_ms=release_tick_ms,
            progress_tick_ms=progress_tick_ms,
            clock=Clock.parse(env.get("SMSCOOL_CLOCK", "")),
            connector_data_dir=Path(env.get("SMSCOOL_CONNECTOR_DATA_DIR", "connector-data")),
            connector_rate_per_s=_float(env, "SMSCOOL_CONNECTOR_RATE", 50.0),
            connector_concurrency=_int(env, "SMSCOOL_CONNECTOR_CONCURRENCY", 16),
            connector_max_attempts=_int(env, "SMSCOOL_CONNECTOR_MAX_ATTEMPTS", 8),
            connector_timeout_s=_float(env, "SMSCOOL_CONNECTOR_TIMEOUT_S", 10.0),
            connector_retry_ambiguous=env.get("SMSCOOL_CONNECTOR_RETRY_AMBIGUOUS", "false")
            .lower() in ("1", "true", "yes"),
            reply_port=int(reply_port) if reply_port else None,
            reply_host=env.get("SMSCOOL_REPLY_HOST", "").strip() or "127.0.0.1",
            stop_keywords=parse_keywords(env.get("SMSCOOL_STOP_KEYWORDS", "")),
            reply_secret=env.get("SMSCOOL_REPLY_SECRET", "").encode(),
            opt_out_after_failures=opt_out_after_failures,
            number_secret=env.get("SMSCOOL_NUMBER_SECRET", "").encode(),
            retention_margin_ms=retention_margin_ms,
            web_host=env.get("SMSCOOL_WEB_HOST", "").strip() or "127.0.0.1",
            web_port=_int(env, "SMSCOOL_WEB_PORT", 8080),
            web_token=env.get("SMSCOOL_WEB_TOKEN", "").strip(),
            web_open_reads=_bool(env, "SMSCOOL_WEB_OPEN_READS", False),
            metrics_host=env.get("SMSCOOL_METRICS_HOST", "").strip() or "127.0.0.1",
            metrics_port=int(metrics_port) if metrics_port.isdigit() else None,
            metrics_enabled=metrics_port != "off",
            # Without a configured key, hashes are still unlinkable to numbers but only
            # comparable within one process.
            log_hash_key=hash_key.encode() if hash_key else secrets.token_bytes(16),
        )

    def number_tag(self, number: str | bytes) -> str:
        """A short keyed hash that names a phone number in logs without revealing it."""
        data = number.encode() if isinstance(number, str) else number
        return "#" + hmac.new(self.log_hash_key, data, hashlib.sha256).hexdigest()[:10]

    def with_bootstrap(self, bootstrap_servers: str) -> Settings:
        return replace(self, bootstrap_servers=bootstrap_servers)

    def require_bootstrap(self) -> str:
        if not self.bootstrap_servers:
            raise SystemExit(
                "KAFKA_BOOTSTRAP_SERVERS is not set: point it at your Kafka "
                "(for example 127.0.0.1:9092), or start one with `smscool broker`."
            )
        return self.bootstrap_servers
