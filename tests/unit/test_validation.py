"""What a gateway would refuse, refused when an automation is written: senders, empty
title and message; a message's attributes and its length in SMS parts."""

import pytest

from streams.automations import Automation
from streams.validation import (
    FieldError,
    attributes_of,
    automation_errors,
    sender_error,
    sms_length,
)


def automation(**changes):
    fields = {"automation_id": "welcome", "title": "Welcome", "country": "DK",
              "message": "Hi {name}", "sender": "Shop", **changes}
    return Automation(**fields)


@pytest.mark.parametrize("sender", ["Shop", "ACME Ltd", "Café-Nord", "12345", "+4512345678",
                                    "123456789012345", "A", "Øresund&Co"])
def test_senders_a_gateway_takes(sender):
    assert sender_error(sender) is None


@pytest.mark.parametrize(("sender", "why"), [
    ("", "a sender is needed"), ("   ", "a sender is needed"),
    ("A" * 12, "at most 11 characters, not 12"),
    ("A" * 22, "at most 11 characters, not 22"),
    ("1234567890123456", "at most 15 digits"),
    ("Shop™", "GSM alphabet only, not '™'"),
    ("Line\nbreak", "GSM alphabet only"),
])
def test_senders_a_gateway_refuses_say_why(sender, why):
    assert why in sender_error(sender)


def test_an_automation_is_checked_field_by_field():
    assert automation_errors(automation()) == []
    errors = automation_errors(automation(title=" ", message="", sender="A" * 22))
    assert [e.field for e in errors] == ["title", "message", "sender"]
    assert all(isinstance(e, FieldError) and e.error for e in errors)


def test_a_messages_attributes_in_order_of_first_use():
    assert attributes_of("Hi {name}, {city} awaits, {name}!") == ["name", "city"]
    assert attributes_of("No attributes {here!}") == []


@pytest.mark.parametrize(("text", "encoding", "units", "parts"), [
    ("", "GSM-7", 0, 1),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),  # an extension character takes two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("Hej Åse, æøå!", "GSM-7", 13, 1),
    ("Привет" + "a" * 64, "UCS-2", 70, 1),
    ("Привет" + "a" * 65, "UCS-2", 71, 2),
    ("😀" * 35, "UCS-2", 70, 1),  # a character outside the BMP takes two UTF-16 units
    ("a" * 134 + "™", "UCS-2", 135, 3),
])
def test_the_length_in_sms_parts(text, encoding, units, parts):
    length = sms_length(text)
    assert (length.encoding, length.units, length.parts) == (encoding, units, parts)
