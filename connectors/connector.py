"""The gateway connector: send requests from sms.outbox to an HTTP SMS gateway, one SMS
per decision id, and what happened back to Kafka.

For each send request, in order:

1. the local ledger (RocksDB, `SMSCOOL_CONNECTOR_DATA_DIR`) is asked whether the decision
   id was handled already — a replayed request is not sent again;
2. before each HTTP attempt the ledger notes the attempt, so that a connector killed
   while a request was in flight knows, after its restart, that the gateway may have
   sent that SMS (an ambiguous send);
3. the gateway's final answer is written to the ledger *before* the Kafka offset is
   stored (confluent-kafka with `enable.auto.offset.store=false`): a crash between the
   answer and the offset commit never sends twice;
4. the outcome is published — `sms.sent` for an accepted SMS (so it counts toward every
   cooldown), `sms.delivery` for every request, `sms.deadletter` for a request the
   gateway refused for good or that ran out of retries — and only once Kafka has
   acknowledged those records is the request's offset stored.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from connectors.gateways import (
    ACCEPTED,
    AMBIGUOUS,
    RATE_LIMITED,
    REJECTED,
    Gateway,
    GatewayResult,
    OutgoingSms,
)
from connectors.replies import ReplyWebhook
from streams import codecs, metrics, topics
from streams.kafka import iter_records, librdkafka_log, position, produce_all
from streams.kafka import producer as kafka_producer
from streams.numbers import to_e164
from streams.optouts import opt_out_record
from streams.outcomes import (
    DELIVERY_ACCEPTED,
    DELIVERY_FAILED,
    DELIVERY_GIVEN_UP,
    OPT_OUT_BY_SMS_REPLY,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

# Final outcomes of a send request (sms.delivery `outcome`).
DELIVERED = DELIVERY_ACCEPTED
FAILED = DELIVERY_FAILED
GIVEN_UP = DELIVERY_GIVEN_UP

# Requests reach the gateway some milliseconds after they leave — up to a hundred or
# two on a loaded machine, more for the first ones on new connections — and no second
# at the gateway may hold more than the rate. So requests leave evenly spaced, 1.2 / rate
# seconds apart: at most rate / 1.2 + 1 (never more than the rate) in any second, with
# room for those delays. The price is a sustained rate of rate / 1.2.
RATE_SPACING = 1.2
MAX_RETRY_AFTER_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RateLimiter:
    """Evenly spaced request starts: at most `rate_per_s` in any second, by a margin."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("the rate limit must be above zero")
        self.interval = RATE_SPACING / rate_per_s
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._next > now:
                metrics.RATE_LIMIT_WAITS.inc()
                metrics.RATE_LIMIT_WAIT_SECONDS.inc(self._next - now)
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 10.0) -> float:
    """Exponential backoff with full jitter, so that retries of many requests spread out."""
    return random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


class Ledger:
    """What the connector did with each decision id, in RocksDB.

    `d:<decision id>` -> JSON {"state": "attempting" | "done", "attempts": n,
    "ambiguous": bool, "outcome": the sms.delivery record once done, "fed_back": bool,
    "sent_from": {partition: offset} lower bounds of where its sms.sent record can be}.
    `p:<decision id>` marks a done entry whose outcome Kafka has not acknowledged yet.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path / "ledger"), Options(raw_mode=True))

    def get(self, decision_id: str) -> dict[str, Any] | None:
        raw = self._db.get(b"d:" + decision_id.encode())
        return None if raw is None else json.loads(raw)

    def put(self, decision_id: str, entry: dict[str, Any]) -> None:
        key = decision_id.encode()
        batch = WriteBatch(raw_mode=True)
        batch.put(b"d:" + key, json.dumps(entry).encode())
        if entry["state"] == "done" and not entry["fed_back"]:
            batch.put(b"p:" + key, b"")
        else:
            batch.delete(b"p:" + key)
        self._db.write(batch)

    def erase_number(self, e164: str) -> tuple[int, int]:
        """Drop the number from the entries of its sends: each keeps its decision id and
        that it is done (a replayed request is still not sent again), not the outcome
        that names the number. Returns (erased, left): entries whose outcome Kafka has not
        acknowledged yet keep it until it is reported; erasing again then takes them.
        Reads the whole ledger."""
        erased = left = 0
        for key, raw in self._db.items(from_key=b"d:"):
            if not isinstance(key, bytes) or not key.startswith(b"d:"):
                break
            entry = json.loads(raw)
            if (entry.get("outcome") or {}).get("e164") != e164:
                continue
            if not entry["fed_back"]:
                left += 1
                continue
            self._db.put(key, json.dumps({
                "state": "done", "attempts": entry["attempts"],
                "ambiguous": entry["ambiguous"], "fed_back": True, "erased": True}).encode())
            erased += 1
        return erased, left

    def awaiting_feedback(self) -> dict[str, dict[str, Any]]:
        """Done entries whose outcome may or may not have reached Kafka."""
        found = {}
        for key in self._db.keys(from_key=b"p:"):
            if not isinstance(key, bytes) or not key.startswith(b"p:"):
                break
            decision_id = key[2:].decode()
            entry = self.get(decision_id)
            if entry is not None:
                found[decision_id] = entry
        return found

    def close(self) -> None:
        self._db.close()


@dataclass
class Stats:
    requests: int = 0          # HTTP attempts
    accepted: int = 0
    retried: int = 0           # attempts after the first
    rate_limited: int = 0      # 429 answers
    failed: int = 0            # refused for good, dead-lettered
    given_up: int = 0          # attempts ran out, dead-lettered
    ambiguous: int = 0         # requests with an attempt whose fate is unknown
    duplicates_skipped: int = 0  # requests whose decision id was handled already
    undecodable: int = 0

    def line(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in vars(self).items())


@dataclass
class PartitionProgress:
    """Offsets of one partition in flight; the committable offset is the lowest one
    not yet done, so a slow request holds back the commit of later ones."""

    pending: set[int] = field(default_factory=set)
    highest_done: int = -1

    def committable(self) -> int:
        return min(self.pending) if self.pending else self.highest_done + 1


class Connector:
    def __init__(self, settings: Settings, gateway: Gateway, group_id: str | None = None) -> None:
        self.settings = settings
        self.gateway = gateway
        self.group_id = group_id or f"{settings.app_id}-connector"
        self.stats = Stats()
        self.ledger = Ledger(settings.connector_data_dir)
        self.limiter = RateLimiter(settings.connector_rate_per_s)
        self._slots = asyncio.Semaphore(settings.connector_concurrency)
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._progress: dict[int, PartitionProgress] = {}
        self._stopping = asyncio.Event()
        self.failed = False  # stopped because a request could not be handled
        self._assigned = False  # by the group, at least once (/readyz)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._session: aiohttp.ClientSession | None = None
        # Per sms.sent partition, an offset at or before which the next record lands:
        # where to look, after a crash, for a report that may already have been made.
        self._sent_from: dict[int, int] = {}

    def stop(self) -> None:
        self._stopping.set()

    # -- Kafka ------------------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.settings.require_bootstrap(),
            "logger": librdkafka_log,
            "group.id": self.group_id,
            "auto.offset.reset": "earliest",
            # Offsets are stored by hand once a request is fully handled, then
            # committed in the background.
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(self.settings.heartbeat_interval_s * 1000),
        }

    async def _publish(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Produce records and wait until Kafka acknowledged every one."""
        assert self._producer is not None
        loop = asyncio.get_running_loop()
        futures = []
        for topic, key, value in records:
            future: asyncio.Future[None] = loop.create_future()

            def delivered(err: KafkaError | None, _msg: Message,
                          future: asyncio.Future[None] = future) -> None:
                # Called from producer.poll(), which runs on this loop's thread.
                if future.done():
                    return
                if err is not None:
                    future.set_exception(RuntimeError(f"not written to Kafka: {err}"))
                    return
                # No offset: a retry the broker had written already (a duplicate
                # sequence after its restart); the lower bound stays where it was.
                offset = _msg.offset()
                if _msg.topic() == topics.SENT and offset is not None:
                    partition = _msg.partition()
                    assert partition is not None
                    self._sent_from[partition] = max(
                        self._sent_from.get(partition, 0), offset + 1)
                future.set_result(None)

            # `_poll_producer` serves the deliveries.
            produce_all(self._producer, topic, [(key, value)], on_delivery=delivered,
                        timeout_s=None)
            futures.append(future)
        await asyncio.gather(*futures)

    async def _write_opt_out(self, e164: str, at_ms: int) -> None:
        key, value = opt_out_record(e164, True, OPT_OUT_BY_SMS_REPLY, at_ms)
        await asyncio.wait_for(self._publish([(topics.OPTOUTS, key, value)]),
                               self.settings.connector_timeout_s)

    async def _poll_producer(self) -> None:
        assert self._producer is not None
        while True:
            self._producer.poll(0)
            await asyncio.sleep(0.005)

    # -- one send request ------------------------------------------------------------

    async def _deliver(self, request: dict[str, Any], entry: dict[str, Any] | None
                       ) -> dict[str, Any]:
        """Send one SMS with retries; returns the sms.delivery record."""
        decision_id = request["decision_id"]
        sms = OutgoingSms(decision_id, request["e164"], request["text"], request["sender"])
        attempts = entry["attempts"] if entry else 0
        # An attempt noted but never answered: the connector died with it in flight.
        ambiguous = bool(entry and (entry.get("ambiguous") or entry["state"] == "attempting"))
        result: GatewayResult | None = None
        timeout_s = self.settings.connector_timeout_s
        session = self._session
        assert session is not None
        while attempts < self.settings.connector_max_attempts:
            if ambiguous and not self.settings.connector_retry_ambiguous:
                break
            await self.limiter.acquire()
            attempts += 1
            self.ledger.put(decision_id, {"state": "attempting", "attempts": attempts,
                                          "ambiguous": ambiguous})
            self.stats.requests += 1
            if attempts > 1:
                self.stats.retried += 1
                metrics.GATEWAY_RETRIES.inc()
            started = time.monotonic()
            result = await self.gateway.send(session, sms, timeout_s)
            metrics.GATEWAY_LATENCY.observe(time.monotonic() - started)
            metrics.GATEWAY_REQUESTS.labels(result.kind).inc()
            if result.kind == ACCEPTED or result.kind == REJECTED:
                break
            if result.kind == AMBIGUOUS:
                ambiguous = True
                if not self.settings.connector_retry_ambiguous:
                    break
            if result.kind == RATE_LIMITED:
                self.stats.rate_limited += 1
            if attempts < self.settings.connector_max_attempts:
                # A far-off Retry-After would hold a slot and the partition's commit.
                wait = min(result.retry_after_s, MAX_RETRY_AFTER_S) \
                    if result.retry_after_s is not None else backoff_s(attempts)
                await asyncio.sleep(wait)
        if result is not None and result.kind == ACCEPTED:
            outcome = DELIVERED
        elif result is not None and result.kind == REJECTED:
            outcome = FAILED
        else:
            outcome = GIVEN_UP
        if ambiguous:
            self.stats.ambiguous += 1
        return {
            "decision_id": decision_id,
            "event_id": request["event_id"],
            "automation_id": request["automation_id"],
            "e164": request["e164"],
            "outcome": outcome,
            "ambiguous": ambiguous,
            "attempts": attempts,
            "gateway": self.gateway.name,
            "message_id": result.message_id if result else None,
            "status": result.status if result else None,
            "detail": result.detail if result else (
                "no attempt left after an unanswered one"
                if attempts >= self.settings.connector_max_attempts
                else "not retried after an unanswered attempt"),
            "at_ms": now_ms(),
        }

    def _feedback(self, message: Message, outcome: dict[str, Any]
                  ) -> list[tuple[str, bytes, bytes]]:
        key = outcome["e164"].encode()
        records = [(topics.DELIVERY, key, codecs.DELIVERY_OUTCOME.encode(outcome))]
        if outcome["outcome"] == DELIVERED:
            records.append((topics.SENT, key, codecs.SENT.encode({
                "phone": outcome["e164"], "country": None, "sent_at_ms": outcome["at_ms"],
                "origin": outcome["automation_id"], "decision_id": outcome["decision_id"],
                "message_id": outcome["message_id"],
            })))
        else:
            reason = "gateway_rejected" if outcome["outcome"] == FAILED else "gateway_gave_up"
            records.append(self._dead_letter(message, reason, (
                f"{outcome['attempts']} attempt(s), last HTTP status {outcome['status']}: "
                f"{outcome['detail']}")))
        return records

    def _dead_letter(self, message: Message, reason: str, detail: str
                     ) -> tuple[str, bytes, bytes]:
        return (topics.DEADLETTER, message.key() or b"", codecs.DEAD_LETTER.encode({
            "reason": reason, "detail": detail, "source_topic": message.topic(),
            "source_partition": message.partition(), "source_offset": message.offset(),
            "key": message.key(), "value": message.value(), "failed_at_ms": now_ms(),
        }))

    async def _handle(self, message: Message) -> None:
        try:
            request = codecs.SEND_REQUEST.decode(message.value())
        except codecs.CodecError as exc:
            self.stats.undecodable += 1
            await self._publish([self._dead_letter(message, exc.reason, exc.detail)])
            return
        decision_id = request["decision_id"]
        # Two copies of one request in flight at once must not both reach the gateway.
        while decision_id in self._in_flight:
            await asyncio.shield(self._in_flight[decision_id])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[decision_id] = done
        try:
            await self._handle_once(message, request)
        finally:
            del self._in_flight[decision_id]
            done.set_result(None)

    async def _handle_once(self, message: Message, request: dict[str, Any]) -> None:
        decision_id = request["decision_id"]
        entry = self.ledger.get(decision_id)
        if entry is not None and entry["state"] == "done":
            if entry["fed_back"]:
                self.stats.duplicates_skipped += 1
                return
            outcome = entry["outcome"]
        else:
            async with self._slots:
                outcome = await self._deliver(request, entry)
            self._count(outcome)
            entry = {"state": "done", "attempts": outcome["attempts"],
                     "ambiguous": outcome["ambiguous"], "outcome": outcome, "fed_back": False,
                     "sent_from": dict(self._sent_from)}
            # The answer is on disk before anything else happens: from here on a crash
            # cannot make this decision id go to the gateway again.
            self.ledger.put(decision_id, entry)
        records = self._feedback(message, outcome)
        if entry.get("sent_published"):
            records = [r for r in records if r[0] != topics.SENT]
        await self._publish(records)
        self.ledger.put(decision_id, {**entry, "fed_back": True})

    def _count(self, outcome: dict[str, Any]) -> None:
        tag = self.settings.number_tag(outcome["e164"])
        if outcome["outcome"] == DELIVERED:
            self.stats.accepted += 1
        elif outcome["outcome"] == FAILED:
            self.stats.failed += 1
            log.warning("gateway refused decision %s for number %s: %s",
                        outcome["decision_id"], tag, outcome["detail"][:200])
        else:
            self.stats.given_up += 1
            log.warning("gave up on decision %s for number %s after %d attempt(s)",
                        outcome["decision_id"], tag, outcome["attempts"])

    # -- the loop ----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True
        for tp in partitions:
            self._progress.setdefault(tp.partition, PartitionProgress())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Requests still in flight for these partitions finish, but their offsets are
        # not ours to store any more: the new owner sees them again, and the ledger
        # (on this machine) does not travel with them. Run one connector per group.
        for tp in partitions:
            self._progress.pop(tp.partition, None)

    def _finish(self, message: Message) -> None:
        topic, partition, offset = position(message)
        progress = self._progress.get(partition)
        if progress is None:
            return
        progress.pending.discard(offset)
        progress.highest_done = max(progress.highest_done, offset)
        assert self._consumer is not None
        try:
            self._consumer.store_offsets(offsets=[TopicPartition(
                topic, partition, progress.committable())])
        except Exception as exc:  # a partition revoked meanwhile
            log.debug("offset not stored: %s", exc)

    async def run(self) -> Stats:
        loop = asyncio.get_running_loop()
        kafka_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        self._consumer = Consumer(self._consumer_config())
        self._producer = kafka_producer(self.settings.require_bootstrap(), acks="all")
        await loop.run_in_executor(kafka_thread, self._recover_feedback)
        self._consumer.subscribe([topics.OUTBOX], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.connector_concurrency))
        poller = asyncio.create_task(self._poll_producer())
        reporter = asyncio.create_task(self._report())
        erasures = asyncio.create_task(self._follow_erasures(kafka_thread))
        served = await self._serve_metrics(kafka_thread)
        replies = None
        if self.settings.reply_port is not None:
            replies = ReplyWebhook(self._write_opt_out, self.settings.stop_keywords,
                                   self.settings.number_tag, self.settings.reply_secret)
            url = await replies.start(self.settings.reply_host, self.settings.reply_port)
            log.info("replies webhook listening: %s", url)
        tasks: set[asyncio.Task[None]] = set()
        # A connector restarted right after a crash must not add its requests to those
        # its predecessor made in the same rate window.
        await asyncio.sleep(RATE_SPACING)
        max_pending = 8 * self.settings.connector_concurrency
        try:
            while not self._stopping.is_set():
                if len(tasks) >= max_pending:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = await loop.run_in_executor(
                    kafka_thread, self._consumer.consume, max_pending - len(tasks), 0.2)
                for message in batch:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.error("consumer error: %s", error)
                        continue
                    _, partition, offset = position(message)
                    self._progress.setdefault(partition, PartitionProgress()).pending.add(offset)
                    task = asyncio.create_task(self._handle(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(functools.partial(self._after, message=message))
            if tasks:
                await asyncio.wait(tasks, timeout=max(30.0, self.settings.connector_timeout_s))
        finally:
            if served is not None:
                await served.cleanup()
            if replies is not None:
                await replies.stop()
            poller.cancel()
            reporter.cancel()
            erasures.cancel()
            # Its consumer closes on the Kafka thread, before that stops.
            await asyncio.gather(erasures, return_exceptions=True)
            await self._session.close()
            self._producer.flush(10)
            await loop.run_in_executor(kafka_thread, self._close_consumer)
            kafka_thread.shutdown()
            self.ledger.close()
            log.info("connector stopped: %s", self.stats.line())
        return self.stats

    async def _serve_metrics(self, kafka_thread: ThreadPoolExecutor) -> Any:
        """/metrics, /healthz and /readyz (ready: its group has assigned it sms.outbox
        partitions, at least once)."""
        if not self.settings.metrics_enabled:
            return None
        loop = asyncio.get_running_loop()

        def measure_lag() -> None:
            consumer = self._consumer
            assert consumer is not None
            metrics.CONNECTOR_LAG.clear()
            for tp in consumer.position(consumer.assignment()):
                _, end = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                read = tp.offset if tp.offset >= 0 else end
                metrics.CONNECTOR_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(
                    max(0, end - read))

        async def before_scrape() -> None:
            await loop.run_in_executor(kafka_thread, measure_lag)

        def ready() -> tuple[bool, dict[str, Any]]:
            partitions = sorted(self._progress) if self._assigned else []
            return self._assigned, {"partitions": partitions}

        port = metrics.CONNECTOR_PORT if self.settings.metrics_port is None \
            else self.settings.metrics_port
        return await metrics.serve(metrics.metrics_app(metrics.CONNECTOR, ready,
                                                       before_scrape=before_scrape),
                                   self.settings.metrics_host, port, "connector")

    def _after(self, task: asyncio.Task[None], message: Message) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Not stored: the request comes back after a restart.
            log.error("request at %s[%d]@%d failed: %r", message.topic(), message.partition(),
                      message.offset(), error)
            self.failed = True
            self._stopping.set()
            return
        self._finish(message)

    def _recover_feedback(self) -> None:
        """Before consuming: learn where new sms.sent records will land, and which
        reports a killed predecessor made without living to note them."""
        assert self._consumer is not None
        metadata = self._consumer.list_topics(topics.SENT, timeout=10).topics[topics.SENT]
        for partition in metadata.partitions:
            # A lower bound of the end is all this needs (some brokers report less).
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topics.SENT, partition), timeout=10, cached=False)
            self._sent_from[partition] = max(high, 0)
        waiting = {d: e for d, e in self.ledger.awaiting_feedback().items()
                   if e["outcome"]["outcome"] == DELIVERED and not e.get("sent_published")}
        if not waiting:
            return
        start: dict[int, int] = {}
        for entry in waiting.values():
            for partition, offset in entry.get("sent_from", {}).items():
                start[int(partition)] = min(start.get(int(partition), offset), offset)
        reported = {codecs.SENT.decode(r.value)["decision_id"] for r in iter_records(
            self.settings.require_bootstrap(), topics.SENT, start=start, idle_s=1.0)}
        for decision_id in waiting.keys() & reported:
            self.ledger.put(decision_id, {**waiting[decision_id], "sent_published": True})
        log.info("after a restart: %d outcome(s) to report again, %d of them on sms.sent "
                 "already", len(waiting), len(waiting.keys() & reported))

    def _close_consumer(self) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing stored yet, or the group is gone
            log.debug("final commit: %s", exc)
        self._consumer.close()

    async def _follow_erasures(self, kafka_thread: ThreadPoolExecutor) -> None:
        """Erase each number sms.erasures names from the ledger; in a group of its own,
        committed once done."""
        loop = asyncio.get_running_loop()
        consumer = Consumer({**self._consumer_config(),
                             "group.id": f"{self.group_id}-erasures",
                             "enable.auto.offset.store": True, "enable.auto.commit": False})
        consumer.subscribe([topics.ERASURES])
        try:
            while True:
                batch = await loop.run_in_executor(kafka_thread, consumer.consume, 100, 0.2)
                handled = False
                for message in batch:
                    if message.error() is not None:
                        continue
                    handled = True
                    self._erase(message)
                if handled:
                    await loop.run_in_executor(
                        kafka_thread, functools.partial(consumer.commit, asynchronous=False))
                await asyncio.sleep(0.5)
        finally:
            await loop.run_in_executor(kafka_thread, consumer.close)

    def _erase(self, message: Message) -> None:
        try:
            request = codecs.ERASURE.decode(message.value())
            e164 = to_e164(request["phone"], request["country"])
        except (codecs.CodecError, ValueError) as exc:
            log.warning("erasure request at %s[%s]@%s not read: %s", message.topic(),
                        message.partition(), message.offset(), exc)
            return
        erased, left = self.ledger.erase_number(e164)
        log.info("number %s erased from the ledger: %d entries%s",
                 self.settings.number_tag(e164), erased,
                 f"; {left} not yet reported keep it (erase again later)" if left else "")

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(10)
            log.info("connector: %s", self.stats.line())
