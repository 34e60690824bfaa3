"""After a chaos run: read every topic and the gateway's log, replay the input through
the reference model, and count what went wrong.

The model (tests/integration/model.py) shares no code with the pipeline. It takes the
input log in time order: the triggers with their Kafka timestamps (a duplicate is the
same trigger again, so only its first copy), and every record of sms.sent — the outside
sends and the gateway's acceptances of the pipeline's own SMS, which count as sends
when they happen — and the pipeline's releases of held messages, which reserve the
number when they are decided, as a pass does.

The model decides a trigger once, at its own time; what becomes of a held message later
is not modelled but checked on its own: it ends with an outcome, goes out at most once,
never before the release time it was promised nor after its deadline.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from smscool.processes import FakeGatewayProcess
from streams import codecs, topics
from streams.automations import Automation
from streams.held import read_held
from streams.kafka import iter_records
from tests.integration.model import CooldownModel, e164, in_window, read_sent, read_trigger

HOLDS = ("held_window", "deferred_cooldown")
# A held message may still wait this long past its release time when the check reads
# it: the release timer's tick and the records' way to Kafka.
RELEASE_GRACE_MS = 10_000


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
    against_window: list[str] = field(default_factory=list)
    outside_window: list[str] = field(default_factory=list)  # SMS sent outside it
    # Held, and neither ended nor still waiting for a release to come, or released and
    # never sent.
    held_lost: list[str] = field(default_factory=list)
    released_twice: list[str] = field(default_factory=list)
    released_late: list[str] = field(default_factory=list)  # past the deadline
    released_early: list[str] = field(default_factory=list)  # before the promised time
    # How many decision ids ever had each outcome.
    outcomes: Counter = field(default_factory=Counter)

    def failures(self) -> dict[str, list[str]]:
        return {
            "cooldown violations": self.violations,
            "double sends": self.double_sends,
            "lost": self.lost,
            "wrongly suppressed": self.wrongly_suppressed,
            "triggers without a decision": self.without_decision,
            "triggers with conflicting decisions": self.conflicting_decisions,
            "outside sends never normalized": self.outside_sends_skipped,
            "window decided against the model": self.against_window,
            "SMS outside the sending window": self.outside_window,
            "held messages lost": self.held_lost,
            "released twice": self.released_twice,
            "released after the deadline": self.released_late,
            "released before its release time": self.released_early,
        }


def check(bootstrap: str, gateway: FakeGatewayProcess,
          automations: list[Automation]) -> Findings:
    f = Findings()
    checked_at = int(time.time() * 1000)
    by_id = {a.automation_id: a for a in automations}
    cooldown = {a.automation_id: a.cooldown_ms for a in automations if a.cooldown_enabled}

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

    # Read before the decisions: a message released meanwhile then shows as released.
    still_held = {m.decision_id for m in read_held(bootstrap)}
    # In the order of each number's partition; a trigger may have several (held, then
    # released, …) and replays repeat them.
    decisions: dict[str, list[dict]] = defaultdict(list)
    for record in iter_records(bootstrap, topics.DECISIONS, idle_s=2.0, timeout_s=600):
        d = codecs.DECISION.decode(record.value)
        d["written_ms"] = record.timestamp_ms  # on the worker's clock
        d["offset"] = record.offset  # a number's decisions share a partition
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

    # Every trigger: one decision at its own time, the same in every copy of its record
    # (a held message's later ones come at its release times, which are later).
    final: dict[str, dict] = {}
    for event_id, (at, _) in first_copy.items():
        records = [d for d in decisions.get(event_id, []) if d["decided_at_ms"] == at] \
            or decisions.get(event_id, [])
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

    # Held messages, each decision id's records in the order of their times: a replayed
    # trigger's record again at the trigger's time, a release's at the release time.
    by_decision: dict[str, list[dict]] = defaultdict(list)
    for records in decisions.values():
        for d in records:
            by_decision[d["decision_id"]].append(d)
    releases: list[tuple[int, str]] = []  # when and to which number, for the model
    for decision_id, records in by_decision.items():
        f.outcomes.update({d["outcome"] for d in records})
        if not any(d["outcome"] in HOLDS for d in records):
            continue
        records.sort(key=lambda d: d["decided_at_ms"])
        last, event_id = records[-1], records[-1]["event_id"]
        if last["outcome"] in HOLDS and (decision_id not in still_held or
                                         last["release_at_ms"] <= checked_at - RELEASE_GRACE_MS):
            f.held_lost.append(f"{event_id} ({decision_id}): {last['outcome']} until "
                               f"{last['release_at_ms']}, checked at {checked_at}, "
                               + ("still on sms.held" if decision_id in still_held
                                  else "not on sms.held"))
        released = sorted({d["decided_at_ms"] for d in records if d["outcome"] == "released"})
        if not released:
            continue
        releases.append((released[0], last["e164"]))
        if decision_id not in times_accepted and decision_id not in dead_sends:
            f.held_lost.append(f"{event_id} ({decision_id}) released at {released[0]}, "
                               f"never sent")
        if len(released) > 1:
            f.released_twice.append(f"{event_id} ({decision_id}) at {released}")
        deadline = first_copy[event_id][0] + by_id[last["automation_id"]].max_hold_ms \
            if event_id in first_copy else None
        for at in released:
            if deadline is not None and at > deadline:
                f.released_late.append(f"{event_id} ({decision_id}) at {at}, "
                                       f"{at - deadline} ms past its deadline")
            promised = max((d["release_at_ms"] for d in records
                            if d["outcome"] in HOLDS and d["decided_at_ms"] < at), default=at)
            if at < promised:
                f.released_early.append(f"{event_id} ({decision_id}) at {at}, "
                                        f"{promised - at} ms before {promised}")

    # The reference model over the input log in time order (sends first on a tie).
    model = CooldownModel([a.to_record() for a in automations])
    timeline = [(at, 0, "sent", phone) for at, phone, _ in sends]
    timeline += [(at, 0, "sent", phone) for at, phone in releases]
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
        # Held back by the cooldown, dropped or deferred; or by the window, held or not.
        # An expiry at once says which: a deferral's names the SMS it waited for.
        by_cooldown = got["outcome"] in ("suppressed_cooldown", "deferred_cooldown") or (
            got["outcome"] == "expired" and got["cause_at_ms"] is not None)
        by_window = got["outcome"] in ("outside_window", "held_window") or (
            got["outcome"] == "expired" and got["cause_at_ms"] is None)
        if expected.outcome in ("passed", "suppressed_cooldown", "outside_window") and \
                (expected.outcome == "outside_window") != by_window:
            f.against_window.append(f"{event_id} at {at}: the model says {expected.outcome}, "
                                    f"the pipeline {got['outcome']}")
        elif expected.outcome == "passed" and by_cooldown:
            line = f"{event_id} at {at}: {got['outcome']}, {got['detail']}"
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
    # decision that reserved it: its pass or its release) or an outside one (at its send
    # time). Windowed automations' SMS must be decided inside their window. A release is
    # decided on the worker's clock: one decided before an SMS dated earlier reached the
    # worker says so.
    decided: dict[str, dict] = {}
    for records in decisions.values():
        for d in records:
            if d["outcome"] in ("passed", "released"):
                decided.setdefault(d["decision_id"], d)
    # In the order they were decided: at one time, an outside send first (it was there
    # before the round's triggers), then the pipeline's decisions as it wrote them.
    by_number: dict[str, list[tuple[int, int, str, str, str, int]]] = defaultdict(list)
    for decision_id in times_accepted:
        d = decided.get(decision_id)
        if d is None:
            continue
        by_number[d["e164"]].append((d["decided_at_ms"], d["offset"], d["automation_id"],
                                     decision_id, d["outcome"], d["written_ms"]))
        a = by_id[d["automation_id"]]
        if not in_window(a.window, a.timezone or "Europe/Copenhagen", d["decided_at_ms"]):
            f.outside_window.append(f"{d['event_id']} ({decision_id}) {d['outcome']} at "
                                    f"{d['decided_at_ms']}, window {a.window}")
    for at, phone, sent in sends:
        if sent["decision_id"] is None:
            by_number[phone].append((at, -1, sent["origin"], sent["message_id"], "sent", 0))
    for items in by_number.values():
        items.sort()
        for (earlier_at, _, origin, earlier, how, earlier_written), \
                (at, _, automation_id, ref, what, ref_written) in zip(items, items[1:],
                                                                      strict=False):
            interval = cooldown.get(automation_id, 0)
            if at - earlier_at < interval:
                late = earlier_written > ref_written
                f.violations.append(f"{ref} {what} {at - earlier_at} ms after {earlier} "
                                    f"{how} by {origin} (interval {interval} ms)"
                                    + (", which was decided after it" if late else ""))
    return f
