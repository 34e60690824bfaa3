"""The REST API (`smscool web`) against the embedded broker: create, update, enable and
disable automations; each invalid field answered 400 with its name; no token, no
access; reads open on loopback only when told."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.automations import read_catalog
from tests.helpers import WEB_TOKEN, call, start_web

pytestmark = pytest.mark.integration

TOKEN = WEB_TOKEN
WELCOME = {"automation_id": "welcome", "title": "Welcome", "event_type": "signup",
           "country": "DK", "message": "Hi {name}, welcome to {shop}", "sender": "Shop",
           "cooldown_enabled": True, "cooldown_ms": 86_400_000}


@pytest.fixture
def api(bootstrap: str, tmp_path: Path) -> Iterator[str]:
    web = start_web(bootstrap, tmp_path, SMSCOOL_WEB_TOKEN=TOKEN)
    try:
        yield web.base  # type: ignore[attr-defined]
    finally:
        web.stop()
    assert TOKEN not in (tmp_path / "web.log").read_text()


def test_create_update_disable_and_enable(api, bootstrap):
    assert call(api, "GET", "/healthz", headers={}) == (200, {"status": "up"})
    status, created = call(api, "POST", "/automations", WELCOME)
    assert status == 201
    assert created["attributes"] == ["name", "shop"]
    # As written: each brace takes two septets.
    assert created["message_length"] == {"encoding": "GSM-7", "units": 32, "parts": 1}
    assert call(api, "POST", "/automations", WELCOME)[0] == 409
    status, updated = call(api, "PATCH", "/automations/welcome",
                           {"cooldown_ms": 3_600_000, "window": "daily 08:00-21:00"})
    assert status == 200 and updated["cooldown_ms"] == 3_600_000
    assert call(api, "POST", "/automations/welcome/disable")[1]["enabled"] is False
    assert call(api, "GET", "/automations/welcome")[1]["enabled"] is False
    assert call(api, "POST", "/automations/welcome/enable")[1]["enabled"] is True
    status, listed = call(api, "GET", "/automations")
    assert [a["automation_id"] for a in listed] == ["welcome"]
    stored = read_catalog(bootstrap).get("welcome")
    assert (stored.cooldown_ms, stored.window, stored.enabled) == (
        3_600_000, "daily 08:00-21:00", True)
    assert call(api, "GET", "/automations/nope")[0] == 404
    assert call(api, "GET", "/readyz", headers={})[0] == 200


@pytest.mark.parametrize(("change", "field", "said"), [
    ({"title": ""}, "title", "a title is needed"),
    ({"message": " "}, "message", "a message is needed"),
    ({"sender": ""}, "sender", "a sender is needed"),
    ({"sender": "A" * 22}, "sender", "at most 11 characters, not 22"),
    ({"country": "XX"}, "country", "XX"),
    ({"timezone": "Mars/Base"}, "timezone", "unknown time zone"),
    ({"window": "sometimes"}, "window", "bad sending window"),
    ({"cooldown_ms": 0}, "cooldown_ms", "greater than zero"),
    ({"cooldown_ms": "a day"}, "cooldown_ms", "must be a whole number"),
    ({"enabled": 1}, "enabled", "must be true or false"),
    ({"outside_window": "maybe"}, "outside_window", "'hold' or 'drop'"),
    ({"on_cooldown": "later"}, "on_cooldown", "'drop' or 'defer'"),
    ({"max_hold_ms": -1}, "max_hold_ms", "greater than zero"),
    ({"priority": 10**7}, "priority", "between"),
    ({"colour": "red"}, "colour", "not a field"),
])
def test_each_invalid_field_is_named(api, change, field, said):
    status, answer = call(api, "POST", "/automations", {**WELCOME, **change})
    assert status == 400, answer
    assert answer["field"] == field and said in answer["error"], answer
    assert "Traceback" not in json.dumps(answer)


def test_without_the_token_nothing_is_served(api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert call(api, "POST", "/automations", WELCOME, headers)[0] == 401
        assert call(api, "GET", "/automations", headers=headers)[0] == 401
    assert call(api, "POST", "/automations", "[not an object]")[0] == 400


def test_reads_are_open_on_loopback_only_when_told(bootstrap, tmp_path):
    web = start_web(bootstrap, tmp_path, SMSCOOL_WEB_OPEN_READS="true")
    try:
        assert call(web.base, "GET", "/automations", headers={}) == (200, [])
        assert call(web.base, "POST", "/automations", WELCOME, headers={})[0] == 401
    finally:
        web.stop()


def test_counts_after_a_known_set_of_triggers(api, bootstrap, start_worker):
    from streams import topics
    from streams.kafka import produce_all, producer
    from tests.helpers import decisions_by_event, now_ms, trigger

    assert call(api, "POST", "/automations", WELCOME)[0] == 201
    start_worker()
    t = now_ms()
    # The same number twice (one passes, the cooldown holds the other back), a third
    # number once, and a trigger whose number cannot be read.
    shop = {"attributes": {"name": "Ada", "shop": "Nord"}}
    triggers = [trigger("c-1", "+4520123401", t, **shop),
                trigger("c-2", "+4520123401", t + 1, **shop),
                trigger("c-3", "+4520123402", t, **shop), trigger("c-4", "+45 123", t, **shop)]
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(tr["event_id"].encode(), json.dumps(tr).encode()) for tr in triggers])
    decisions_by_event(bootstrap, 4, 90)
    status, counts = call(api, "GET", "/automations/welcome/counts")
    assert status == 200
    expected = {"passed": 2, "suppressed_cooldown": 1, "invalid_number": 1}
    assert counts == {"automation_id": "welcome", "last_hour": expected,
                      "last_day": expected}
    assert call(api, "GET", "/automations/nope/counts")[0] == 404
    # Why was the number not texted? Asked as written locally, normalized with DK.
    status, why = call(api, "GET", "/automations/welcome/why?number=20%2012%2034%2001")
    assert status == 200, why
    assert why["e164"] == "+4520123401" and why["tag"].startswith("#")
    assert [d["outcome"] for d in why["decisions"]] == ["suppressed_cooldown", "passed"]
    suppressed, passed = why["decisions"]
    assert suppressed["cause"]["ref"] == passed["decision_id"], why
    assert suppressed["detail"].startswith("the number got an SMS from")
    assert call(api, "GET", "/automations/welcome/why?number=12")[0] == 400
    status, none = call(api, "GET", "/automations/welcome/why?number=%2B4520123499")
    assert (status, none["decisions"]) == (200, [])
