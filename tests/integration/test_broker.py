"""The embedded broker with S3 storage keeps topics, records and committed offsets across
a SIGKILL and restart; while no broker answers, the commands that talk to Kafka fail
with a clear message within their timeout instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import topics
from streams.broker import EmbeddedBroker, free_port
from streams.kafka import ensure_topics, produce_all, producer, read_records
from streams.local_s3 import LocalS3
from tests.helpers import APP_ID, PARTITIONS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def durable_broker(tmp_path: Path):
    try:
        from streams.broker import tansu_binary

        tansu_binary()
        import moto.server  # noqa: F401
    except (SystemExit, ImportError) as exc:
        pytest.skip(f"no durable embedded broker: {exc} (pip install -e '.[dev]')")
    log = (tmp_path / "broker.log").open("wb")
    s3 = LocalS3(log=log).start()
    broker = EmbeddedBroker(log=log, s3=s3).start()
    try:
        yield broker
    finally:
        broker.stop()
        s3.stop()
        log.close()


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)]
    finally:
        consumer.close()


def test_topics_records_and_offsets_survive_a_killed_broker(durable_broker):
    bootstrap = durable_broker.bootstrap_servers
    ensure_topics(bootstrap, topics.topic_specs(APP_ID, PARTITIONS))
    values = [f"trigger-{i}".encode() for i in range(200)]
    produce_all(producer(bootstrap, acks="all"), topics.TRIGGERS,
                [(f"customer-{i}".encode(), v) for i, v in enumerate(values)])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "survivor",
                         "enable.auto.commit": False})
    read = [TopicPartition(topics.TRIGGERS, p, 0) for p in range(PARTITIONS)]
    consumer.assign(read)
    got = 0
    deadline = time.monotonic() + 60
    while got < len(values) and time.monotonic() < deadline:
        got += sum(1 for m in consumer.consume(500, timeout=0.5) if m.error() is None)
    assert got == len(values)
    at = consumer.position(read)
    consumer.commit(offsets=at, asynchronous=False)
    consumer.close()

    durable_broker.kill()
    durable_broker.start()

    after = read_records(bootstrap, topics.TRIGGERS, idle_s=2.0)
    assert sorted(r.value for r in after) == sorted(values)
    assert committed(bootstrap, "survivor", topics.TRIGGERS) == [tp.offset for tp in at]


def smscool(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    # A loopback port that nothing listens on: no broker answers.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    return subprocess.run([sys.executable, "-m", "smscool", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["automation", "list"],
    ["automation", "create", "welcome", "--event-type", "signup", "--country", "DK",
     "--message", "Hi", "--sender", "Shop"],
    ["automation", "disable", "welcome"],
    ["held", "list", "welcome"],
    ["produce", "sms.triggers", "--key", "customer-1", "--timeout", "5"],
])
def test_without_a_broker_commands_fail_with_a_clear_message(args):
    started = time.monotonic()
    run = smscool(args, stdin='{"event_id": "e-1"}\n')
    assert run.returncode == 1, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert "Kafka did not answer" in last and "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in last
    assert "Traceback" not in run.stderr
    assert time.monotonic() - started < 60
