"""An independent reference model of the cooldown pipeline, for the integration tests.

It shares no code with `streams/` beyond the input records: numbers are checked with
phonenumbers directly, windows with zoneinfo, the cooldown with a dict. Given the
automations, the outside sends and the triggers in the order each number sees them,
it says what must become of every trigger.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import fastavro
import phonenumbers

from schemas import SCHEMA_DIR

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _schema(full_name: str):
    def plain(node):
        # Times are read as plain longs, as the pipeline writes them.
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items() if k != "logicalType"}
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    with (SCHEMA_DIR / f"{full_name}.avsc").open() as f:
        return fastavro.parse_schema(plain(json.load(f)))


_TRIGGER = _schema("sms_cooldown.Trigger")
_SENT = _schema("sms_cooldown.Sent")


def read_sent(value: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(value), _SENT, None)


def read_trigger(value: bytes) -> dict | None:
    """The trigger a producer wrote, or None for bytes no reader could make sense of."""
    if value[:1] == b"{":
        try:
            record = json.loads(value)
        except ValueError:
            return None
        required = {"event_id", "phone", "occurred_at_ms"}
        if not isinstance(record, dict) or not required <= set(record):
            return None
        return {"automation_id": None, "event_type": None, "segment": None, "attributes": {},
                **record}
    buffer = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buffer, _TRIGGER, None)
    except Exception:
        return None
    return record if buffer.tell() == len(value) else None


def e164(phone: str, region: str) -> str | None:
    if not phone.strip() or re.search(r"[^0-9 +\-.()/]", phone):
        return None
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def in_window(spec: str, zone: str, at_ms: int) -> bool:
    if spec == "always":
        return True
    days, hours = spec.split(" ")
    start, end = hours.split("-")
    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(zone))
    if days == "daily":
        allowed = set(range(7))
    else:
        first, last = days.split("-")
        allowed = set(range(_DAYS.index(first), _DAYS.index(last) + 1))
    minute = local.hour * 60 + local.minute
    h1, m1 = map(int, start.split(":"))
    h2, m2 = map(int, end.split(":"))
    return local.weekday() in allowed and h1 * 60 + m1 <= minute < h2 * 60 + m2


@dataclass
class Expected:
    outcome: str
    e164: str | None = None
    automation_id: str | None = None


def decision_id(event_id: str, automation_id: str) -> str:
    return hashlib.sha256(f"{event_id}\x1f{automation_id}".encode()).hexdigest()[:32]


class CooldownModel:
    def __init__(self, automations: list[dict]) -> None:
        self.automations = {a["automation_id"]: a for a in automations}
        self.last: dict[str, int] = {}   # E.164 -> latest SMS time

    def sent(self, number: str, at_ms: int) -> None:
        self.last[number] = max(self.last.get(number, at_ms), at_ms)

    def trigger(self, value: bytes, at_ms: int) -> Expected | None:
        """What becomes of one trigger; None when it must be dead-lettered."""
        t = read_trigger(value)
        if t is None:
            return None
        if t["automation_id"] is not None:
            a = self.automations.get(t["automation_id"])
            if a is None:
                return Expected("unknown_automation", automation_id=t["automation_id"])
        else:
            matches = [a for a in self.automations.values()
                       if a["event_type"] == t["event_type"]
                       and a["segment"] in (None, t["segment"])]
            if not matches:
                return Expected("no_matching_automation")
            assert len(matches) == 1, "the scenarios give each event type one automation"
            a = matches[0]
        region = a["country"] if len(a["country"]) == 2 else "DK"
        number = e164(t["phone"], region)
        if number is None:
            return Expected("invalid_number", automation_id=a["automation_id"])
        result = Expected("passed", number, a["automation_id"])
        if not a["enabled"]:
            result.outcome = "automation_disabled"
        elif not in_window(a["window"], a["timezone"] or "Europe/Copenhagen", at_ms):
            result.outcome = "outside_window"
        elif a["cooldown_enabled"] and at_ms - self.last.get(number, -10**15) < a["cooldown_ms"]:
            result.outcome = "suppressed_cooldown"
        else:
            self.sent(number, at_ms)
        return result
