"""The Faust app object, configured from Settings.

Built by a function rather than at import, so that importing the project starts
nothing and tests can build an app with the memory store.
"""

from __future__ import annotations

import faust

from streams.settings import Settings

# Faust lets its own environment variables override App arguments; with a prefix only
# variables meant for it (SMSCOOL_FAUST_…) can.
FAUST_ENV_PREFIX = "SMSCOOL_FAUST_"


def build_app(settings: Settings) -> faust.App:
    """The worker installs `streams.faust_patches` before it builds the app."""
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
        # Faust queues up to 4,096 events per stream ahead of the agent; an event is a
        # bundle of up to 900 kB here, so a backlog would fill gigabytes. A few bundles
        # ahead keep the agent busy.
        stream_buffer_maxsize=16,
        # Correctness comes from idempotent decisions and sends, not from transactions.
        processing_guarantee="at_least_once",
        # No standby copies of the table on other workers. A standby that Faust had
        # filled was found, after its worker restarted and took the partition over,
        # to record the changelog's end as read while it lacked numbers written
        # before it (akin to faust-streaming #212, standby events not
        # written to global tables): cooldowns were broken. Taking a partition
        # over now means reading its changelog from this worker's own offset.
        table_standby_replicas=0,
    )

