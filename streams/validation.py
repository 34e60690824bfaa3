"""What a gateway would refuse later, refused when an automation is written: one module
for every path that writes one (the command line and the REST API).

A sender is what the phone shows as "from": 1–11 characters of the GSM 7-bit alphabet,
or a number of up to 15 digits. Title and message must say something. A message's
length is counted in SMS parts as gateways count them: GSM-7 when every character is in
the GSM alphabet (160 characters in one SMS, 153 a part when concatenated; the
extension characters `^{}[]~|€\\` take two), UCS-2 otherwise (70, and 67 a part,
counted in UTF-16 units).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from streams.automations import Automation, InvalidField

# GSM 03.38: the basic character set, and the extension table (an escape and a
# character: two septets each).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
MAX_ALPHANUMERIC_SENDER = 11
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class FieldError:
    """One field that cannot be as given, and why (the REST API answers these as
    `{"field": …, "error": …}`)."""

    field: str
    error: str


def sender_error(sender: str) -> str | None:
    if not sender.strip():
        return "a sender is needed: 1–11 letters or digits, or a number"
    if _NUMERIC_SENDER.fullmatch(sender):
        return None
    if sender.isdigit() or sender.lstrip("+").isdigit():
        return "a numeric sender has at most 15 digits"
    if len(sender) > MAX_ALPHANUMERIC_SENDER:
        return (f"an alphanumeric sender has at most {MAX_ALPHANUMERIC_SENDER} characters, "
                f"not {len(sender)}")
    outside = sorted({c for c in sender if c not in GSM_BASIC or c in "\n\r"})
    if outside:
        return f"a sender takes characters of the GSM alphabet only, not {''.join(outside)!r}"
    return None


def automation_errors(automation: Automation) -> list[FieldError]:
    """What a gateway would refuse in `automation`, field by field (none: it may be
    written)."""
    errors = []
    if not automation.title.strip():
        errors.append(FieldError("title", "a title is needed (for internal use)"))
    if not automation.message.strip():
        errors.append(FieldError("message", "a message is needed"))
    why = sender_error(automation.sender)
    if why is not None:
        errors.append(FieldError("sender", why))
    return errors


def attributes_of(message: str) -> list[str]:
    """The trigger attributes a message uses, `{name}`, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(message)))


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 units (UCS-2)
    parts: int


def sms_length(text: str) -> SmsLength:
    """How many SMS parts `text` takes, as gateways count them."""
    if all(c in GSM_BASIC or c in GSM_EXTENSION for c in text):
        units = sum(2 if c in GSM_EXTENSION else 1 for c in text)
        return SmsLength("GSM-7", units, 1 if units <= 160 else -(-units // 153))
    units = len(text.encode("utf-16-le")) // 2
    return SmsLength("UCS-2", units, 1 if units <= 70 else -(-units // 67))


# What a writer of an automation may give, with the JSON types each takes.
EDITABLE: dict[str, tuple[type, ...]] = {
    "title": (str,), "event_type": (str, type(None)), "segment": (str, type(None)),
    "country": (str,), "timezone": (str, type(None)), "window": (str,), "message": (str,),
    "sender": (str,), "enabled": (bool,), "cooldown_enabled": (bool,), "cooldown_ms": (int,),
    "failed_sends_count": (bool,), "outside_window": (str,), "on_cooldown": (str,),
    "max_hold_ms": (int,), "priority": (int,), "transactional": (bool,),
}
REQUIRED = ("title", "country", "message", "sender")


def build_automation(automation_id: str, fields: dict[str, Any], base: Automation | None,
                     now_ms: int) -> tuple[Automation | None, list[FieldError]]:
    """An automation from JSON fields: a new one (`base` None) or `base` with `fields`
    changed; or the fields that cannot be as given, and why."""
    errors = [FieldError(name, "not a field of an automation")
              for name in fields if name not in EDITABLE]
    for name, value in fields.items():
        kinds = EDITABLE.get(name)
        if kinds is not None and (not isinstance(value, kinds) or
                                  (isinstance(value, bool) and bool not in kinds)):
            errors.append(FieldError(name, f"must be {_kinds(kinds)}"))
    if base is None:
        errors += [FieldError(name, "is needed") for name in REQUIRED if name not in fields]
    if errors:
        return None, errors
    record = {**(base.to_record() if base is not None else {}), **fields,
              "automation_id": automation_id, "updated_at_ms": now_ms}
    try:
        automation = Automation.from_record(record)
    except InvalidField as exc:
        return None, [FieldError(exc.field, str(exc))]
    errors = automation_errors(automation)
    return (None, errors) if errors else (automation, [])


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", bool: "true or false",
             type(None): "null"}
    return " or ".join(names[kind] for kind in kinds)
