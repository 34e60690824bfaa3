"""After a chaos run: read every topic and the gateway's log, replay the input through
the reference model, and count what went wrong.

The model (tests/integration/model.py) shares no code with the pipeline. It takes the
input log in time order: the triggers with their Kafka timestamps (a duplicate is the
same trigger again, so only its first copy), and every record of sms.sent — the outside
sends and the gateway's acceptances of the pipeline's own SMS, which count as sends
when they happen.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from smscool.processes import FakeGatewayProcess
from streams import codecs, topics
from streams.kafka import iter_records
from tests.chaos.workload import AUTOMATIONS
from tests.integration.model import CooldownModel, e164, read_sent, read_trigger


@dataclass
class Findings:
    triggers: int = 0
    duplicates: int = 0
    outside_sends: int = 0
    passed: int = 0
    suppressed: int = 0
    accepted: int = 0
    violations: list[str] = field(default_factory=list)
    double_sends: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    wrongly_suppressed: list[str] = field(default_factory=list)
    # Suppressed by an SMS dated after the trigger that reached the worker first (after a
    # stall): the rule holds back any SMS that would follow another within the interval.
    suppressed_by_later_sms: list[str] = field(default_factory=list)
    given_up: int = 0  # ambiguous sends dead-lettered rather than risk a second SMS
    given_up_but_sent: int = 0  # of those, how many the gateway had in fact sent
    passed_against_model: list[str] = field(default_factory=list)
    without_decision: list[str] = field(default_factory=list)
    conflicting_decisions: list[str] = field(default_factory=list)
    outside_sends_skipped: list[str] = field(default_factory=list)
    # Normalized, but only after the feeder stopped waiting for them (a long stall).
    outside_sends_late: list[str] = field(default_factory=list)

    def failures(self) -> dict[str, list[str]]:
        return {
            "cooldown violations": self.violations,
            "double sends": self.double_sends,
            "lost": self.lost,
            "wrongly suppressed": self.wrongly_suppressed,
            "triggers without a decision": self.without_decision,
            "triggers with conflicting decisions": self.conflicting_decisions,
            "outside sends never normalized": self.outside_sends_skipped,
        }


def check(bootstrap: str, gateway: FakeGatewayProcess) -> Findings:
    f = Findings()
    cooldown = {a.automation_id: a.cooldown_ms for a in AUTOMATIONS if a.cooldown_enabled}

    # The input log, first copies only, and the pipeline's sends as the gateway saw them.
    first_copy: dict[str, tuple[int, bytes]] = {}
    placed: dict[str, str] = {}  # event id -> where its first copy is, for the report
    for record in iter_records(bootstrap, topics.TRIGGERS, idle_s=2.0, timeout_s=600):
        trigger = read_trigger(record.value or b"")
        if trigger is None:
            continue
        if trigger["event_id"] in first_copy:
            f.duplicates += 1
            continue
        first_copy[trigger["event_id"]] = (record.timestamp_ms, record.value)
        placed[trigger["event_id"]] = f"{record.topic}[{record.partition}]@{record.offset}"
    f.triggers = len(first_copy)
    sends: list[tuple[int, str, dict]] = []
    for record in iter_records(bootstrap, topics.SENT, idle_s=2.0, timeout_s=600):
        sent = read_sent(record.value)
        number = e164(sent["phone"], "DK")
        if number is not None:
            sends.append((sent["sent_at_ms"], number, sent))
        if sent["decision_id"] is None:
            f.outside_sends += 1

    decisions: dict[str, list[dict]] = defaultdict(list)
    for record in iter_records(bootstrap, topics.DECISIONS, idle_s=2.0, timeout_s=600):
        d = codecs.DECISION.decode(record.value)
        decisions[d["event_id"]].append(d)
    dead_sends = set()
    for record in iter_records(bootstrap, topics.DEADLETTER, idle_s=2.0, timeout_s=600):
        dead = codecs.DEAD_LETTER.decode(record.value)
        if dead["source_topic"] == topics.OUTBOX and dead["value"]:
            dead_sends.add(codecs.SEND_REQUEST.decode(dead["value"])["decision_id"])
            f.given_up += dead["reason"] == "gateway_gave_up"
    accepted = gateway.recorded("accepted")
    f.accepted = len(accepted)
    times_accepted = Counter(a["userref"] for a in accepted)
    f.given_up_but_sent = len(dead_sends & set(times_accepted))
    # Every SMS the pipeline can name as a cause: its own accepted decisions and the
    # outside sends.
    known_sms = set(times_accepted) | {s["message_id"] for _, _, s in sends}
    f.double_sends = [f"{d} accepted {n} times" for d, n in times_accepted.items() if n > 1]

    # Every trigger: one final decision, the same in every copy of its record.
    final: dict[str, dict] = {}
    for event_id in first_copy:
        records = decisions.get(event_id, [])
        kinds = {(d["decision_id"], d["outcome"]) for d in records}
        if not kinds:
            f.without_decision.append(f"{event_id} at {placed[event_id]}")
        elif len(kinds) > 1:
            # Where each copy came from and, if suppressed, by which SMS: the trail
            # for finding which worker's state was missing what.
            f.conflicting_decisions.append(f"{event_id}: " + "; ".join(
                f"{d['outcome']} from {d['source_topic']}[{d['source_partition']}]"
                f"@{d['source_offset']} at {d['decided_at_ms']}"
                + (f" by {d['cause_origin']} {d['cause_ref']} at {d['cause_at_ms']}"
                   if d["cause_ref"] else "")
                for d in records))
        if records:
            final[event_id] = records[0]

    # The reference model over the input log in time order (sends first on a tie).
    model = CooldownModel([a.to_record() for a in AUTOMATIONS])
    timeline = [(at, 0, "sent", phone) for at, phone, _ in sends]
    timeline += [(at, 1, event_id, value) for event_id, (at, value) in first_copy.items()]
    timeline.sort(key=lambda item: (item[0], item[1]))
    for at, order, event_id, data in timeline:
        if order == 0:
            model.sent(data, at)
            continue
        expected = model.trigger(data, at)
        got = final.get(event_id)
        if expected is None or got is None:
            continue
        if got["outcome"] == "passed":
            f.passed += 1
        elif got["outcome"] == "suppressed_cooldown":
            f.suppressed += 1
        if expected.outcome == "passed" and got["outcome"] == "suppressed_cooldown":
            line = f"{event_id} at {at}: {got['detail']}"
            if got["cause_at_ms"] > at and got["cause_ref"] in known_sms:
                f.suppressed_by_later_sms.append(line)
            else:
                f.wrongly_suppressed.append(line)
        elif expected.outcome == "suppressed_cooldown" and got["outcome"] == "passed":
            f.passed_against_model.append(f"{event_id} at {at}")
        if got["outcome"] == "passed" and got["decision_id"] not in times_accepted \
                and got["decision_id"] not in dead_sends:
            f.lost.append(f"{event_id} ({got['decision_id']})")

    # Cooldown violations on the rule's clock: an SMS of an automation with a cooldown
    # that came less than the interval after the number's previous SMS, ours (at the
    # decision that reserved it) or an outside one (at its send time).
    decided = {d["decision_id"]: d for records in decisions.values() for d in records}
    by_number: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for decision_id in times_accepted:
        d = decided.get(decision_id)
        if d is not None:
            by_number[d["e164"]].append((d["decided_at_ms"], d["automation_id"], decision_id))
    for at, phone, sent in sends:
        if sent["decision_id"] is None:
            by_number[phone].append((at, sent["origin"], sent["message_id"]))
    for items in by_number.values():
        items.sort()
        for (earlier_at, _, earlier), (at, automation_id, ref) in zip(
                items, items[1:], strict=False):
            interval = cooldown.get(automation_id, 0)
            if at - earlier_at < interval:
                f.violations.append(f"{ref} {at - earlier_at} ms after {earlier} "
                                    f"(interval {interval} ms)")
    return f
