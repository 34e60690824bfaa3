"""docs/openapi.yaml describes the routes `smscool web` serves, no more and no fewer, and
the fields an automation takes as the API checks them."""

from pathlib import Path

import yaml

from smscool.web import AutomationsApi
from streams.automations import Catalog
from streams.settings import Settings
from streams.validation import EDITABLE

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs/openapi.yaml").read_text())


def test_the_openapi_file_lists_every_route_served():
    app = AutomationsApi(Settings(), Catalog(), None, print, print).app()
    served = {(route.method.lower(), route.resource.canonical)
              for route in app.router.routes() if route.method != "HEAD"}
    described = {(method, path) for path, item in SPEC["paths"].items()
                 for method in item if method != "parameters"}
    assert served == described


def test_the_openapi_file_names_the_fields_the_api_takes():
    fields = SPEC["components"]["schemas"]["AutomationFields"]["properties"]
    assert set(fields) == set(EDITABLE)


def test_decision_counts_by_outcome_count_a_replay_once_and_keep_a_day():
    from smscool.web import DAY_MS, HOUR_MS, DecisionCounts
    from streams import codecs

    now = 1_767_225_600_000

    def decision(decision_id, outcome, at_ms, automation_id="welcome"):
        return codecs.DECISION.encode({
            "decision_id": decision_id, "event_id": "e", "automation_id": automation_id,
            "e164": None, "outcome": outcome, "detail": "", "decided_at_ms": at_ms,
            "source_topic": "sms.triggers", "source_partition": 0, "source_offset": 0,
            "cause_at_ms": None, "cause_origin": None, "cause_ref": None,
            "release_at_ms": None})

    counts = DecisionCounts()
    for value in (decision("d1", "passed", now - 60_000), decision("d1", "passed", now - 60_000),
                  decision("d2", "suppressed_cooldown", now - 2 * HOUR_MS),
                  decision("d3", "held_window", now - 10_000),
                  decision("d3", "released", now - 5_000),
                  decision("d4", "passed", now - 2 * DAY_MS),
                  decision("d5", "passed", now, automation_id="other"), b"garbage"):
        counts.add(value, now)
    assert counts.since("welcome", now - HOUR_MS) == {"held_window": 1, "passed": 1,
                                                      "released": 1}
    assert counts.since("welcome", now - DAY_MS) == {
        "held_window": 1, "passed": 1, "released": 1, "suppressed_cooldown": 1}
    counts.forget_before(now - HOUR_MS)
    assert counts.since("welcome", now - DAY_MS) == {"held_window": 1, "passed": 1,
                                                     "released": 1}
