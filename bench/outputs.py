"""What the benchmark's own contenders (textbook Faust, plain confluent-kafka) write:
a `sms_cooldown.Decision` per trigger and a `sms_cooldown.SendRequest` per pass,
with the fields the shipped worker fills, and the few settings they share with it.

Both contenders serve the benchmark's workload only: each event type answers exactly
one automation, whose window is "always" (see `bench.workload`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.workload import bench_automations, terms_of
from streams.automations import Automation
from streams.rule import PASSED, AutomationTerms, Decision
from streams.settings import Settings

# The automation and the rule's terms for each event type.
BY_EVENT_TYPE: dict[str, tuple[Automation, AutomationTerms]] = {
    a.event_type or "": (a, terms_of(a)) for a in bench_automations()
}

# The shipped worker's group timeouts and commit interval (streams/app.py), so that
# every contender joins its group as fast and commits as often.
SHIPPED = Settings()


def decision_value(decision: Decision, event_id: str, automation_id: str, e164: str,
                   topic: str, partition: int, offset: int) -> dict[str, Any]:
    cause = decision.cause
    if cause is not None:
        detail = f"the number got an SMS from {cause.origin} at {cause.at_ms} (ref {cause.ref})"
    else:
        detail = "passed the cooldown; the number is reserved" \
            if decision.outcome == PASSED else decision.outcome
    return {
        "decision_id": decision.decision_id, "event_id": event_id,
        "automation_id": automation_id, "e164": e164, "outcome": decision.outcome,
        "detail": detail, "decided_at_ms": decision.decided_at_ms,
        "cause_at_ms": cause.at_ms if cause else None,
        "cause_origin": cause.origin if cause else None,
        "cause_ref": cause.ref if cause else None,
        "source_topic": topic, "source_partition": partition, "source_offset": offset,
    }


def send_request_value(decision: Decision, event_id: str, automation: Automation,
                       e164: str, text: str) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id, "event_id": event_id,
        "automation_id": automation.automation_id, "e164": e164, "text": text,
        "sender": automation.sender, "decided_at_ms": decision.decided_at_ms,
    }


def report_first_read() -> None:
    """Note when the first input record was read (the start of the throughput clock),
    in the file the harness named in BENCH_STATS_FILE."""
    path = os.environ.get("BENCH_STATS_FILE")
    if path:
        Path(path).write_text(json.dumps({"first_read_ms": int(time.time() * 1000)}))
