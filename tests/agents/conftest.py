"""In-process fixtures, after Faust's testing guide: a fresh app per test bound to the
test's event loop, the memory store, flow control resumed, and a recorder per
outbound topic in place of the worker's librdkafka producer. No broker."""

import asyncio
import uuid

import pytest

from streams import codecs, topics
from streams.agents import Pipeline, build_pipeline
from streams.app import build_app
from streams.automations import Catalog
from streams.ingest import Ingest
from streams.records import Source
from streams.settings import DEFAULT_PARTITIONS, Settings


class Recorder:
    """Keeps (key, decoded value) of every record written to one topic."""

    def __init__(self, codec: codecs.AvroCodec | None) -> None:
        self.codec = codec
        self.raw: list[tuple[bytes | None, bytes]] = []
        self.partitions: list[int | None] = []

    @property
    def records(self) -> list[tuple[bytes | None, dict]]:
        assert self.codec is not None
        return [(key, self.codec.decode(value)) for key, value in self.raw]

    @property
    def values(self) -> list[dict]:
        return [value for _, value in self.records]


class RecordingOutputs:
    """Stands in for KafkaOutputs: one Recorder per topic, every record acknowledged
    at once."""

    def __init__(self, changelog_topic: str) -> None:
        self.by_topic = {topic: Recorder(codec) for topic, codec in topics.CODECS.items()}
        self.by_topic[changelog_topic] = Recorder(None)
        self.acknowledged: dict[int, int] = {}

    def send(self, topic: str, key: bytes | None, value: bytes,
             partition: int | None = None) -> None:
        recorder = self.by_topic[topic]
        recorder.raw.append((key, value))
        recorder.partitions.append(partition)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def run(loop):
    """Run a coroutine to completion on the test's loop."""
    return loop.run_until_complete


@pytest.fixture
def settings():
    return Settings(app_id=f"test-{uuid.uuid4().hex[:12]}", store="memory",
                    partitions=DEFAULT_PARTITIONS, log_hash_key=b"test")


@pytest.fixture
def changelog(settings) -> str:
    return topics.changelog_topic(settings.app_id)


@pytest.fixture
def outputs(changelog) -> RecordingOutputs:
    return RecordingOutputs(changelog)


@pytest.fixture
def pipeline(loop, settings, outputs):
    app = build_app(settings)
    pipeline = build_pipeline(app, settings, outputs=outputs)
    app.finalize()
    app.flow_control.resume()
    yield pipeline
    # Acking a message builds the app's consumer, whose thread gets an event loop of its own
    # that only a started consumer would close; without a broker, close it here.
    consumer_thread = getattr(app._consumer, "_thread", None)
    if consumer_thread is not None:
        consumer_thread.thread_loop.close()


@pytest.fixture
def catalog():
    return Catalog()


@pytest.fixture
def ingest(settings, catalog, outputs):
    return Ingest(settings, catalog, outputs)


@pytest.fixture
def message():
    """A record as ingest reads it: (topic, partition, offset, timestamp_ms, key, value)."""
    return Source


def recorder(name):
    @pytest.fixture
    def fixture(outputs) -> Recorder:
        return outputs.by_topic[name]

    return fixture


bundles = recorder(topics.BY_NUMBER)
decisions = recorder(topics.DECISIONS)
outbox = recorder(topics.OUTBOX)
deadletter = recorder(topics.DEADLETTER)


@pytest.fixture
def changelog_records(outputs, changelog) -> Recorder:
    return outputs.by_topic[changelog]


@pytest.fixture
def cooldown_agent(pipeline: Pipeline):
    (agent,) = [a for name, a in pipeline.app.agents.items() if "cooldown" in name]
    return agent


@pytest.fixture
def store(pipeline: Pipeline) -> dict:
    """The `last_sent` table's memory store: key -> state bytes."""
    return pipeline.last_sent.data.data


@pytest.fixture
def feed(pipeline, run, store):
    """Put records (key, value, partition) one by one into the cooldown agent's test
    context, each with the Kafka timestamp `timestamp_ms`; after each, let the states
    go to the store as the flush before a commit does, and note the store's bytes of
    `watch` (a key)."""

    def feed(agent, records, *, timestamp_ms, watch=None):
        async def put_all():
            states = []
            async with agent.test_context() as test_agent:
                for key, value, partition in records:
                    await test_agent.put(key=key, value=value, partition=partition,
                                         timestamp=timestamp_ms / 1000)
                    pipeline.states.persist()
                    states.append(store.get(watch))
            return states

        return run(put_all())

    return feed
