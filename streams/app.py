"""The Faust app object, configured from Settings.

Built by a function rather than at import, so that importing the project starts
nothing and tests can build an app with the memory store.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.settings import Settings

# Faust lets its own environment variables override App arguments; with a prefix only
# variables meant for it (SMSCOOL_FAUST_…) can.
FAUST_ENV_PREFIX = "SMSCOOL_FAUST_"


def build_app(settings: Settings) -> faust.App:
    set_fetch_wait(settings.fetch_wait_ms)
    store = "rocksdb://" if settings.store == "rocksdb" else "memory://"
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers or '127.0.0.1:9092'}",
        store=store,
        datadir=str(settings.data_dir),
        env_prefix=FAUST_ENV_PREFIX,
        autodiscover=False,
        web_enabled=False,
        # Changing this starts every table empty; never bump it by accident.
        version=1,
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_linger_ms=settings.linger_ms,
        # Correctness comes from idempotent decisions and sends, not from transactions.
        processing_guarantee="at_least_once",
    )


def set_fetch_wait(ms: int) -> None:
    """Make Faust's stream consumer wait at most `ms` at the broker for records.

    Faust builds that consumer with a fixed 1,500 ms wait; a broker that answers an
    empty fetch only when the wait runs out then delays each hop by up to that much.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread, "_faust_create_worker_consumer",
                     AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        # Read when the consumer starts its fetcher, so setting it here is enough.
        consumer._fetch_max_wait_ms = ms
        return consumer

    AIOKafkaConsumerThread._faust_create_worker_consumer = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
