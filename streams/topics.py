"""Topic and table names, in one place; the tests import them from here.

| topic | key | value | partitions |
|---|---|---|---|
| sms.automations | automation id | sms_cooldown.Automation | 1, compacted |
| sms.triggers | anything | sms_cooldown.Trigger (Avro or JSON) | any |
| sms.sent | anything | sms_cooldown.Sent (Avro or JSON) | any |
| sms-cooldown-by-number (internal) | none | sms_cooldown.NumberEventBundle | settings.partitions |
| sms.outbox | E.164 | sms_cooldown.SendRequest | settings.partitions |
| sms.decisions | E.164 or event id | sms_cooldown.Decision | settings.partitions |
| sms.delivery | E.164 | sms_cooldown.DeliveryOutcome | settings.partitions |
| sms.deadletter | the source key | sms_cooldown.DeadLetter | 1 |
| sms.held | decision id | sms_cooldown.Held (tombstone: done) | settings.partitions, compacted |
| sms.optouts | E.164 or any | sms_cooldown.OptOut (Avro or JSON) | settings.partitions, compacted |
| sms.erasures | E.164 | sms_cooldown.Erasure | settings.partitions |

The table `last_sent` (key: E.164, value: the number's state, see `streams.state`; and
the release index of held messages, see `streams.held`) is changelogged to
`<app id>-last_sent-changelog`, partitioned like the by-number topic so that one worker
owns a number everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams import codecs

AUTOMATIONS = "sms.automations"
TRIGGERS = "sms.triggers"
SENT = "sms.sent"
BY_NUMBER = "sms-cooldown-by-number"
OUTBOX = "sms.outbox"
DECISIONS = "sms.decisions"
DELIVERY = "sms.delivery"
DEADLETTER = "sms.deadletter"
HELD = "sms.held"
OPTOUTS = "sms.optouts"
ERASURES = "sms.erasures"

LAST_SENT_TABLE = "last_sent"

# What every topic the project knows carries: the one map the pipeline, the command
# line and the tests use.
CODECS: dict[str, codecs.AvroCodec] = {
    AUTOMATIONS: codecs.AUTOMATION,
    TRIGGERS: codecs.TRIGGER,
    SENT: codecs.SENT,
    BY_NUMBER: codecs.NUMBER_EVENT_BUNDLE,
    OUTBOX: codecs.SEND_REQUEST,
    DECISIONS: codecs.DECISION,
    DELIVERY: codecs.DELIVERY_OUTCOME,
    DEADLETTER: codecs.DEAD_LETTER,
    HELD: codecs.HELD,
    OPTOUTS: codecs.OPT_OUT,
    ERASURES: codecs.ERASURE,
}


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{LAST_SENT_TABLE}-changelog"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    # Topics the cooldown agent reads (or writes as its state) must all have exactly
    # `settings.partitions` partitions; the worker refuses to start otherwise.
    copartitioned: bool = False


def topic_specs(app_id: str, partitions: int) -> list[TopicSpec]:
    return [
        TopicSpec(AUTOMATIONS, 1, compacted=True),
        TopicSpec(TRIGGERS, partitions),
        TopicSpec(SENT, partitions),
        TopicSpec(BY_NUMBER, partitions, copartitioned=True),
        TopicSpec(changelog_topic(app_id), partitions, compacted=True, copartitioned=True),
        TopicSpec(OUTBOX, partitions),
        TopicSpec(DECISIONS, partitions),
        TopicSpec(DELIVERY, partitions),
        TopicSpec(DEADLETTER, 1),
        TopicSpec(HELD, partitions, compacted=True),
        TopicSpec(OPTOUTS, partitions, compacted=True),
        TopicSpec(ERASURES, partitions),
    ]
