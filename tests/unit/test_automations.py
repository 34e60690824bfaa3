"""Automation definitions: durations, validation, message rendering, the record form, and
the catalog kept in step with sms.automations."""

import json

import pytest

from streams import codecs
from streams.automations import (
    Automation,
    Catalog,
    MissingAttribute,
    UnknownAutomation,
    format_duration,
    parse_duration_ms,
)

T0 = 1_767_225_600_000
HOUR = 3_600_000


def automation(**changes):
    fields = {"automation_id": "welcome", "title": "Welcome", "country": "DK",
              "message": "Hi {name}", "sender": "ACME", "event_type": "signup"}
    return Automation(**{**fields, **changes})


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("24h", 24 * HOUR), ("30m", 1_800_000), ("90s", 90_000), ("7d", 7 * 24 * HOUR),
     ("1500ms", 1500), (" 2 h ", 2 * HOUR), ("0s", 0)],
)
def test_parse_duration(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-1h", "24H", "1w", "24 hours"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(24 * HOUR, "1d"), (2 * 24 * HOUR, "2d"), (HOUR, "1h"), (25 * HOUR, "25h"),
     (1_800_000, "30m"), (90_000, "90s"), (1500, "1500ms"), (0, "0ms")],
)
def test_format_duration(ms, text):
    assert format_duration(ms) == text
    assert parse_duration_ms(text) == ms


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"automation_id": " "}, "needs an id"),
        ({"country": "XX"}, "unknown country"),
        ({"country": ""}, "unknown country"),
        ({"cooldown_enabled": True, "cooldown_ms": 0}, "greater than zero"),
        ({"cooldown_enabled": True, "cooldown_ms": -1}, "greater than zero"),
        ({"window": "sometimes"}, "bad sending window"),
        ({"window": "mon-fri 09:00-09:00"}, "same time"),
        ({"timezone": "Mars/Olympus", "window": "daily 09:00-20:00"}, "unknown time zone"),
        ({"country": "US", "window": "mon-fri 09:00-20:00"}, "several time zones"),
    ],
)
def test_invalid_automation(changes, message):
    with pytest.raises(ValueError, match=message):
        automation(**changes)


def test_cooldown_off_needs_no_interval():
    assert automation(cooldown_enabled=False, cooldown_ms=0).cooldown_ms == 0


def test_us_automation_sending_always_needs_no_timezone():
    us = automation(country="US", window="always")
    assert (us.region, us.zone) == ("US", "UTC")


def test_us_automation_with_a_window_and_a_timezone():
    us = automation(country="+1", window="mon-fri 09:00-20:00", timezone="America/New_York")
    assert (us.region, us.zone, us.sending_window().tz) == ("US", "America/New_York",
                                                            "America/New_York")


def test_zone_from_a_single_zone_country():
    assert automation(window="daily 09:00-20:00").zone == "Europe/Copenhagen"


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "attributes", "text"),
    [
        ("Hi {name}", {"name": "Bo"}, "Hi Bo"),
        ("Hi {name}, see you in {city}", {"name": "Bo", "city": "Aarhus", "x": "y"},
         "Hi Bo, see you in Aarhus"),
        ("No placeholders", {}, "No placeholders"),
        ("{name}{name}", {"name": "{city}"}, "{city}{city}"),
        ("Odd braces {} { name }", {}, "Odd braces {} { name }"),
    ],
)
def test_render(message, attributes, text):
    assert automation(message=message).render(attributes) == text


def test_render_missing_attribute():
    with pytest.raises(MissingAttribute) as err:
        automation(message="Hi {name} in {city}").render({"name": "Bo"})
    assert err.value.args == ("city",)


# --- record form ------------------------------------------------------------------------------

FULL = automation(enabled=False, segment="vip", timezone="Europe/Copenhagen",
                  window="mon-fri 09:00-20:00", cooldown_enabled=True, cooldown_ms=24 * HOUR,
                  updated_at_ms=T0)


def test_to_record():
    assert FULL.to_record() == {
        "automation_id": "welcome", "title": "Welcome", "country": "DK",
        "message": "Hi {name}", "sender": "ACME", "event_type": "signup", "segment": "vip",
        "timezone": "Europe/Copenhagen", "window": "mon-fri 09:00-20:00", "enabled": False,
        "cooldown_enabled": True, "cooldown_ms": 24 * HOUR, "failed_sends_count": False,
        "updated_at_ms": T0, "outside_window": "hold", "on_cooldown": "drop",
        "max_hold_ms": 7 * 24 * HOUR, "priority": 0, "transactional": False,
    }


@pytest.mark.parametrize("original", [FULL, automation()])
def test_encode_decode_round_trip(original):
    assert Automation.from_record(original.to_record()) == original
    assert Automation.decode(original.encode()) == original
    assert codecs.AUTOMATION.decode(original.encode()) == original.to_record()


def test_decode_json_definition():
    data = json.dumps({"automation_id": "otp", "title": "OTP", "country": "+45",
                       "message": "Code {code}", "sender": "ACME", "updated_at_ms": T0}).encode()
    assert Automation.decode(data) == Automation("otp", "OTP", "+45", "Code {code}", "ACME",
                                                 updated_at_ms=T0)


# --- catalog ----------------------------------------------------------------------------------


def test_apply_definition_and_update():
    catalog = Catalog()
    catalog.apply(b"welcome", FULL.encode())
    assert catalog.get("welcome") == FULL
    newer = FULL.updated(message="Hello {name}", updated_at_ms=T0 + 1)
    catalog.apply(b"welcome", newer.encode())
    assert (catalog.get("welcome"), len(catalog)) == (newer, 1)


def test_apply_tombstone_deletes():
    catalog = Catalog([FULL, automation(automation_id="otp", event_type=None)])
    catalog.apply(b"welcome", None)
    assert catalog.get("welcome") is None
    assert [a.automation_id for a in catalog.all()] == ["otp"]
    catalog.apply(None, None)
    catalog.apply(b"never-defined", None)
    assert len(catalog) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe garbage",
        b"",
        b'{"automation_id": "welcome"}',
        codecs.AUTOMATION.encode({**automation().to_record(), "country": "XX"}),
        codecs.AUTOMATION.encode(
            {**automation().to_record(), "cooldown_enabled": True, "cooldown_ms": 0}),
    ],
)
def test_apply_garbage_keeps_the_previous_definition(value):
    catalog = Catalog([FULL])
    catalog.apply(b"welcome", value)
    assert catalog.get("welcome") == FULL
    assert len(catalog) == 1


def test_disabled_automation_is_found_by_id_and_event_type():
    disabled = automation(enabled=False)
    catalog = Catalog([disabled])
    assert catalog.for_trigger({"automation_id": "welcome"}) == [disabled]
    assert catalog.for_trigger({"automation_id": None, "event_type": "signup"}) == [disabled]


def test_for_trigger_unknown_id():
    with pytest.raises(UnknownAutomation) as err:
        Catalog([FULL]).for_trigger({"automation_id": "nope", "event_type": "signup"})
    assert err.value.args == ("nope",)


def test_automation_without_event_type_answers_only_by_id():
    otp = automation(automation_id="otp", event_type=None)
    catalog = Catalog([otp])
    assert catalog.for_trigger({"automation_id": None, "event_type": None}) == []
    assert catalog.for_trigger({"automation_id": None, "event_type": "signup"}) == []
    assert catalog.for_trigger({"automation_id": "otp"}) == [otp]


def test_an_automation_id_is_short():
    with pytest.raises(ValueError, match="100 bytes"):
        automation(automation_id="a" * 101)


def test_the_catalog_asks_kafka_again_while_it_does_not_answer(monkeypatch):
    import time

    from confluent_kafka import KafkaError, KafkaException

    from streams import automations

    monkeypatch.setattr(automations.time, "sleep", lambda _s: None)
    answers = iter([KafkaException(KafkaError(KafkaError._TRANSPORT)),
                    KafkaException(KafkaError(KafkaError._TRANSPORT)), "metadata"])

    def ask() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert automations._until_answered(ask, time.monotonic() + 60) == "metadata"

    def never() -> str:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    with pytest.raises(KafkaException):  # past the deadline it gives up
        automations._until_answered(never, time.monotonic() - 1)
