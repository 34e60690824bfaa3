"""In-process agent fixtures, after Faust's testing guide: a fresh app per test bound to the
test's event loop, the memory store, flow control resumed, and one recorder per outbound
topic in place of the worker's Kafka outputs. No broker."""

import asyncio
import uuid

import pytest

from streams import codecs, topics
from streams.agents import Pipeline, build_pipeline
from streams.app import build_app
from streams.automations import Catalog
from streams.settings import Settings


class Recorder:
    """Keeps (key, decoded value) of every record the agents write to one topic."""

    def __init__(self, codec: codecs.AvroCodec) -> None:
        self.codec = codec
        self.raw: list[tuple[bytes, bytes]] = []

    @property
    def records(self) -> list[tuple[bytes, dict]]:
        return [(key, self.codec.decode(value)) for key, value in self.raw]

    @property
    def values(self) -> list[dict]:
        return [value for _, value in self.records]


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
def catalog():
    return Catalog()


class RecordingOutputs:
    """Stands in for the worker's KafkaOutputs: one Recorder per topic."""

    def __init__(self) -> None:
        self.by_topic = {
            topics.BY_NUMBER: Recorder(codecs.NUMBER_EVENT),
            topics.DECISIONS: Recorder(codecs.DECISION),
            topics.OUTBOX: Recorder(codecs.SEND_REQUEST),
            topics.DEADLETTER: Recorder(codecs.DEAD_LETTER),
        }

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.by_topic[topic].raw.append((key, value))


@pytest.fixture
def pipeline(loop, catalog):
    settings = Settings(app_id=f"test-{uuid.uuid4().hex[:12]}", store="memory", partitions=1,
                        log_hash_key=b"test")
    app = build_app(settings)
    pipeline = build_pipeline(app, settings, outputs=RecordingOutputs(), catalog=catalog,
                              follow_automations=False)
    app.finalize()
    app.flow_control.resume()
    yield pipeline
    # Acking a message builds the app's consumer, whose thread gets an event loop of its own
    # that only a started consumer would close; without a broker, close it here.
    consumer_thread = getattr(app._consumer, "_thread", None)
    if consumer_thread is not None:
        consumer_thread.thread_loop.close()


@pytest.fixture
def by_number(pipeline) -> Recorder:
    return pipeline.outputs.by_topic[topics.BY_NUMBER]


@pytest.fixture
def decisions(pipeline) -> Recorder:
    return pipeline.outputs.by_topic[topics.DECISIONS]


@pytest.fixture
def outbox(pipeline) -> Recorder:
    return pipeline.outputs.by_topic[topics.OUTBOX]


@pytest.fixture
def deadletter(pipeline) -> Recorder:
    return pipeline.outputs.by_topic[topics.DEADLETTER]


def _agent(pipeline: Pipeline, part: str):
    (agent,) = [a for name, a in pipeline.app.agents.items() if part in name]
    return agent


@pytest.fixture
def cooldown_agent(pipeline):
    return _agent(pipeline, "cooldown")


@pytest.fixture
def normalize_agent(pipeline):
    return _agent(pipeline, "normalize")


@pytest.fixture
def feed(pipeline, run):
    """Put (key, value) records one by one into an agent's test context, each with the Kafka
    timestamp `timestamp_ms`, and return the `last_sent` bytes of each record's key after it.

    `topic` names the source topic of the messages: the wrapper names them after the agent's
    channel, and the normalize agent reads two topics, which Faust leaves as "<internal>".
    """

    def feed(agent, records, *, timestamp_ms, topic=None):
        async def put_all():
            states = []
            async with agent.test_context() as test_agent:
                if topic is not None:
                    test_agent.original_channel = topic
                for key, value in records:
                    await test_agent.put(key=key, value=value, timestamp=timestamp_ms / 1000)
                    states.append(pipeline.last_sent.get(key))
            return states

        return run(put_all())

    return feed
