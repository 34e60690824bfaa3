"""The Faust agents: normalize and re-key every input by E.164, then decide.

`normalize` is stateless and runs the pure `streams.normalize.route` on every record
of sms.triggers, sms.sent and sms.delivery. `cooldown` is the only writer of a number's state: it
reads the E.164-keyed topic, applies the pure rule `streams.rule.decide` against the
`last_sent` table, and writes a decision per trigger and a send request per pass.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import faust

from streams import codecs, topics
from streams.automations import Catalog, follow_catalog
from streams.normalize import Limits, Output, Source, dead_letter, route
from streams.rule import PASSED, AutomationTerms, LastSend, decide, record_send, release
from streams.settings import Settings
from streams.state import decode_state, encode_state
from streams.window import SendingWindow, parse_window

log = logging.getLogger(__name__)

_OUTPUT_CODECS = {
    topics.BY_NUMBER: codecs.NUMBER_EVENT,
    topics.DECISIONS: codecs.DECISION,
    topics.OUTBOX: codecs.SEND_REQUEST,
    topics.DEADLETTER: codecs.DEAD_LETTER,
}


@lru_cache(maxsize=1024)
def _window(spec: str, tz: str) -> SendingWindow | None:
    return None if spec == "always" else parse_window(spec, tz)


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    catalog: Catalog
    catalog_loaded: asyncio.Event
    last_sent: faust.Table
    # Anything with send(topic, key, value): KafkaOutputs in a worker, a recorder in tests.
    outputs: Any

    def emit(self, output: Output) -> None:
        value = _OUTPUT_CODECS[output.topic].encode(output.value)
        self.outputs.send(output.topic, output.key, value)


def build_pipeline(app: faust.App, settings: Settings, *, outputs: Any,
                   catalog: Catalog | None = None,
                   follow_automations: bool = True) -> Pipeline:
    """Declare topics, the table and the agents on `app`.

    With `follow_automations`, a background task keeps `catalog` in step with
    sms.automations; without it (tests), the catalog given is used as it is.
    """
    partitions = settings.partitions

    def topic(*names: str, **kw: Any) -> faust.TopicT:
        return app.topic(*names, key_type=bytes, value_type=bytes, **kw)

    # Only the topics the agents read: their records go out through `outputs`.
    by_number = topic(topics.BY_NUMBER, partitions=partitions)
    inputs = topic(topics.TRIGGERS, topics.SENT, topics.DELIVERY)
    last_sent = app.Table(
        topics.LAST_SENT_TABLE, default=None, partitions=partitions,
        key_type=bytes, value_type=bytes,
    )
    pipeline = Pipeline(app, settings, catalog or Catalog(), asyncio.Event(), last_sent, outputs)
    limits = Limits(settings.max_clock_skew_ms, settings.max_trigger_age_ms)

    if follow_automations:
        @app.task
        async def automations() -> None:
            await follow_catalog(pipeline.catalog, settings.bootstrap_servers,
                                 pipeline.catalog_loaded)
    else:
        pipeline.catalog_loaded.set()

    # The agents yield nothing: for each value an agent yields, Faust writes a debug log
    # record and looks for sinks, a tenth of the worker's time.
    @app.agent(inputs, name="normalize")
    async def normalize(stream: faust.StreamT[bytes]) -> None:
        # Deciding against a half-read catalog would call known automations unknown.
        await pipeline.catalog_loaded.wait()
        async for event in stream.events():
            message = event.message
            source = Source(message.topic, message.partition, message.offset,
                            round(message.timestamp * 1000), message.key, message.value)
            for output in route(source, pipeline.catalog, limits):
                if output.topic == topics.DEADLETTER:
                    log.warning("dead letter from %s[%d]@%d: %s", source.topic,
                                source.partition, source.offset, output.value["reason"])
                pipeline.emit(output)

    @app.agent(by_number, name="cooldown")
    async def cooldown(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            apply_number_event(pipeline, event.key, event.value, event.message)

    return pipeline


_TRIGGER_FIELDS = ("event_id", "decision_id", "automation_id", "text", "sender")


def _terms_of(number_event: dict[str, Any]) -> AutomationTerms:
    """The automation's terms a trigger carries; ValueError when they make no sense."""
    missing = [name for name in _TRIGGER_FIELDS if number_event[name] is None]
    if missing:
        raise ValueError(f"a trigger number event without {', '.join(missing)}")
    return AutomationTerms(
        automation_id=number_event["automation_id"],
        enabled=number_event["enabled"],
        cooldown_enabled=number_event["cooldown_enabled"],
        cooldown_ms=number_event["cooldown_ms"],
        window=_window(number_event["window"], number_event["timezone"]),
    )


def apply_number_event(pipeline: Pipeline, key: bytes, value: bytes, message: Any) -> None:
    try:
        number_event = codecs.NUMBER_EVENT.decode(value)
        kind = number_event["kind"]
        terms = _terms_of(number_event) if kind == "trigger" else None
        if kind == "release" and not number_event["decision_id"]:
            raise ValueError("a release without decision_id")
    except (codecs.CodecError, ValueError) as exc:
        # Only a bug or a foreign writer puts such a record on the internal topic; it
        # must not stop the agent, nor reserve a number for an SMS that cannot be made.
        reason, detail = (exc.reason, exc.detail) if isinstance(exc, codecs.CodecError) \
            else ("invalid_record", str(exc))
        source = Source(message.topic, message.partition, message.offset,
                        round(message.timestamp * 1000), key, value)
        pipeline.emit(dead_letter(source, source.timestamp_ms, reason, detail))
        return
    table = pipeline.last_sent
    state = decode_state(table.get(key))
    if terms is None:
        if kind == "release":
            new_state = release(state, number_event["decision_id"])
        else:
            new_state = record_send(state, LastSend(
                number_event["at_ms"], number_event["origin"] or "unknown",
                number_event["ref"] or ""))
        if new_state is not None and new_state != state:
            table[key] = encode_state(new_state)
        return
    decision, new_state = decide(number_event["decision_id"], terms, state, number_event["at_ms"])
    if new_state is not None and new_state != state:
        table[key] = encode_state(new_state)
    cause = decision.cause
    if decision.outcome != PASSED:
        log.debug("number %s: %s", pipeline.settings.number_tag(key), decision.outcome)
    pipeline.emit(Output(topics.DECISIONS, key, {
        "decision_id": decision.decision_id,
        "event_id": number_event["event_id"],
        "automation_id": number_event["automation_id"],
        "e164": number_event["e164"],
        "outcome": decision.outcome,
        "detail": _detail(decision.outcome, cause),
        "decided_at_ms": decision.decided_at_ms,
        "cause_at_ms": cause.at_ms if cause else None,
        "cause_origin": cause.origin if cause else None,
        "cause_ref": cause.ref if cause else None,
        "source_topic": number_event["source_topic"],
        "source_partition": number_event["source_partition"],
        "source_offset": number_event["source_offset"],
    }))
    if decision.outcome == PASSED:
        pipeline.emit(Output(topics.OUTBOX, key, {
            "decision_id": decision.decision_id,
            "event_id": number_event["event_id"],
            "automation_id": number_event["automation_id"],
            "e164": number_event["e164"],
            "text": number_event["text"],
            "sender": number_event["sender"],
            "decided_at_ms": decision.decided_at_ms,
        }))


def _detail(outcome: str, cause: LastSend | None) -> str:
    if cause is not None:
        return f"the number got an SMS from {cause.origin} at {cause.at_ms} (ref {cause.ref})"
    return {
        PASSED: "passed the cooldown; the number is reserved",
        "outside_window": "outside the automation's sending window",
        "automation_disabled": "the automation is disabled",
    }.get(outcome, outcome)
