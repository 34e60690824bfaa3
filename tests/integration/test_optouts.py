"""Opt-outs end to end: by the command line and by an outside system's record on
sms.optouts, each followed by a trigger that gets `opted_out`; a transactional
automation still texts the number; opting back in lets the next trigger through."""

from __future__ import annotations

import json

import pytest

from streams import codecs, topics
from streams.automations import Automation, publish_automation
from streams.bundles import events_seen
from streams.kafka import produce_all, producer, read_records, wait_for
from streams.records import OPT_OUT_EVENT
from streams.rule import decision_id_for
from tests.helpers import decisions_by_event, now_ms, trigger

pytestmark = pytest.mark.integration

WELCOME = Automation("welcome", "Welcome", country="DK", event_type="signup",
                     message="Welcome, {name}!", sender="Shop", cooldown_enabled=True,
                     cooldown_ms=3_600_000)
RECEIPT = Automation("receipt", "Order receipt", country="DK", event_type="order",
                     message="Thanks for your order, {name}", sender="Shop",
                     transactional=True)
BY_CLI, BY_CRM = "+4520123401", "+4520123402"


def opt_out_events_on_the_bundles(bootstrap: str, wanted: int) -> None:
    """Wait until ingest has handed `wanted` opt-out events to the cooldown agents: a
    trigger written after that reaches its agent after the opt-out."""
    wait_for(bootstrap, topics.BY_NUMBER, events_seen(wanted, OPT_OUT_EVENT), 90)


def send_triggers(bootstrap: str, *triggers: dict) -> None:
    produce_all(producer(bootstrap), topics.TRIGGERS,
                [(t["phone"].encode(), json.dumps(t).encode()) for t in triggers])


def test_opt_out_by_cli_and_by_an_outside_record_then_back_in(
        bootstrap, start_worker, monkeypatch, capsys):
    from smscool.cli import main

    for automation in (WELCOME, RECEIPT):
        publish_automation(bootstrap, automation)
    start_worker()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)

    assert main(["optout", "add", BY_CLI, "--scope", "newsletter"]) == 0
    # Another system's record: its own key, the number in national form.
    produce_all(producer(bootstrap), topics.OPTOUTS, [(b"customer-2", json.dumps({
        "phone": "20 12 34 02", "country": "DK", "opted_out": True, "at_ms": now_ms(),
        "channel": "crm"}).encode())])
    opt_out_events_on_the_bundles(bootstrap, 2)
    t = now_ms()
    send_triggers(bootstrap, trigger("signup-1", BY_CLI, t), trigger("signup-2", "20123402", t),
                  trigger("order-1", BY_CLI, t, event_type="order"))
    by_event = decisions_by_event(bootstrap, 3, 90)
    outcome = {event: [d["outcome"] for d in ds] for event, ds in by_event.items()}
    assert outcome == {"signup-1": ["opted_out"], "signup-2": ["opted_out"],
                       "order-1": ["passed"]}
    assert "opted out of SMS" in by_event["signup-1"][0]["detail"]
    outbox = [codecs.SEND_REQUEST.decode(r.value)
              for r in read_records(bootstrap, topics.OUTBOX, idle_s=1.0)]
    assert [(s["event_id"], s["e164"]) for s in outbox] == [("order-1", BY_CLI)]

    capsys.readouterr()
    assert main(["optout", "check", "20 12 34 01", "--country", "DK"]) == 0
    assert capsys.readouterr().out.startswith(f"{BY_CLI} opted out since ")
    assert main(["optout", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["number"], row["channel"]) for row in listed] == [
        (BY_CLI, "cli"), (BY_CRM, "crm")]

    assert main(["optout", "remove", BY_CLI]) == 0
    opt_out_events_on_the_bundles(bootstrap, 3)
    # Back in, the number is decided by the cooldown again: the receipt it was sent a
    # moment ago holds the welcome back.
    send_triggers(bootstrap, trigger("signup-3", BY_CLI, now_ms()))
    by_event = decisions_by_event(bootstrap, 4, 90)
    assert [d["outcome"] for d in by_event["signup-3"]] == ["suppressed_cooldown"]
    capsys.readouterr()
    assert main(["optout", "check", BY_CLI]) == 0
    assert capsys.readouterr().out == f"{BY_CLI} is not opted out\n"


def test_optout_refuses_a_number_it_cannot_read(bootstrap, monkeypatch, capsys):
    from smscool.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    assert main(["optout", "add", "20123401"]) == 2
    assert "needs --country" in capsys.readouterr().err


def test_a_stop_reply_through_the_gateway_opts_the_number_out(
        bootstrap, start_worker, tmp_path):
    from smscool.processes import ConnectorProcess, FakeGatewayProcess

    publish_automation(bootstrap, WELCOME)
    start_worker()
    gateway = FakeGatewayProcess(tmp_path / "gateway.log", "test-token").start()
    connector = ConnectorProcess(bootstrap, gateway.url, "test-token", tmp_path / "connector",
                                 tmp_path / "connector.log", {"SMSCOOL_REPLY_PORT": "0"})
    try:
        connector.start()
        assert gateway.reply("4520123403", "Hi, who is this?", connector.reply_url) == {
            "status": 200, "answer": {"opted_out": False}}
        assert gateway.reply("4520123403", " Stop ", connector.reply_url) == {
            "status": 200, "answer": {"opted_out": True}}
        (record,) = read_records(bootstrap, topics.OPTOUTS, idle_s=1.0)
        assert record.key == b"+4520123403"
        value = codecs.OPT_OUT.decode(record.value)
        assert (value["phone"], value["opted_out"], value["channel"]) == (
            "+4520123403", True, "sms_reply")
        opt_out_events_on_the_bundles(bootstrap, 1)
        send_triggers(bootstrap, trigger("signup-4", "+4520123403", now_ms()))
        by_event = decisions_by_event(bootstrap, 1, 90)
        assert [d["outcome"] for d in by_event["signup-4"]] == ["opted_out"]
        assert "by sms_reply" in by_event["signup-4"][0]["detail"]
    finally:
        connector.stop()
        gateway.stop()
    # The connector names the number by its tag only.
    assert "20123403" not in (tmp_path / "connector.log").read_text()


def test_a_number_whose_sends_fail_for_good_twice_in_a_row_is_opted_out(
        bootstrap, start_worker, tmp_path):
    from smscool.processes import ConnectorProcess, FakeGatewayProcess

    alerts = Automation("alerts", "Alerts", country="DK", event_type="alert",
                        message="Alert for {name}", sender="Shop")
    publish_automation(bootstrap, alerts)
    start_worker(SMSCOOL_OPT_OUT_AFTER_FAILURES="2")
    # The gateway refuses every send for good.
    gateway = FakeGatewayProcess(tmp_path / "gateway.log", "test-token", {"p400": 1.0}).start()
    connector = ConnectorProcess(bootstrap, gateway.url, "test-token", tmp_path / "connector",
                                 tmp_path / "connector.log").start()
    number = "+4520123404"
    try:
        t = now_ms()
        send_triggers(bootstrap, trigger("alert-1", number, t, event_type="alert"),
                      trigger("alert-2", number, t + 1, event_type="alert"))

        def auto_opt_out(records: list) -> bool:
            value = codecs.OPT_OUT.decode(records[-1].value)
            return value["channel"] == "auto_failed_deliveries"

        records = wait_for(bootstrap, topics.OPTOUTS, auto_opt_out, 90)
        assert records[-1].key == number.encode()
        assert codecs.OPT_OUT.decode(records[-1].value)["opted_out"] is True
        send_triggers(bootstrap, trigger("alert-3", number, now_ms(), event_type="alert"))
        by_event = decisions_by_event(bootstrap, 3, 90)
        assert {e: [d["outcome"] for d in ds] for e, ds in by_event.items()} == {
            "alert-1": ["passed"], "alert-2": ["passed"], "alert-3": ["opted_out"]}
        assert "by auto_failed_deliveries" in by_event["alert-3"][0]["detail"]
    finally:
        connector.stop()
        gateway.stop()


def test_erase_forgets_a_number_everywhere_but_keeps_an_opt_out_as_its_hash(
        bootstrap, start_worker, tmp_path, monkeypatch, capsys):
    from rocksdict import Options, Rdict

    from smscool.cli import main
    from smscool.processes import ConnectorProcess, FakeGatewayProcess
    from tests.helpers import APP_ID

    secret = {"SMSCOOL_NUMBER_SECRET": "erasure-test-secret"}
    publish_automation(bootstrap, WELCOME)
    start_worker(**secret)
    for name, value in {**secret, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}.items():
        monkeypatch.setenv(name, value)
    gateway = FakeGatewayProcess(tmp_path / "gateway.log", "test-token").start()
    connector = ConnectorProcess(bootstrap, gateway.url, "test-token", tmp_path / "connector",
                                 tmp_path / "connector.log", {"SMSCOOL_LOG_LEVEL": "INFO"})
    texted, opted = "+4520123405", "+4520123406"
    try:
        connector.start()
        assert main(["optout", "add", opted]) == 0
        opt_out_events_on_the_bundles(bootstrap, 1)
        t = now_ms()
        send_triggers(bootstrap, trigger("e-1", texted, t), trigger("e-2", opted, t))
        wait_for(bootstrap, topics.SENT, lambda records: len(records) >= 1, 90)
        by_event = decisions_by_event(bootstrap, 2, 90)
        assert [d["outcome"] for d in by_event["e-1"]] == ["passed"]

        assert main(["erase", texted]) == 0
        assert main(["erase", opted]) == 0
        said = capsys.readouterr().out
        assert "the opt-out stays, as the number's keyed hash only" in said
        changelog = topics.changelog_topic(APP_ID)

        def both_erased(records: list) -> bool:
            gone = {r.key for r in records if r.value is None}
            return {texted.encode(), opted.encode()} <= gone

        wait_for(bootstrap, changelog, both_erased, 60)
        connector.logged_after("erased from the ledger: 1 entries", 60)

        # The number texted before is decided as a new one: its cooldown is forgotten.
        send_triggers(bootstrap, trigger("e-3", texted, now_ms()),
                      trigger("e-4", opted, now_ms()))
        by_event = decisions_by_event(bootstrap, 4, 90)
        assert [d["outcome"] for d in by_event["e-3"]] == ["passed"]
        assert [d["outcome"] for d in by_event["e-4"]] == ["opted_out"]
    finally:
        connector.stop()
        gateway.stop()

    # The compacted topics and the ledger keep no trace of the opted-out number's digits.
    latest = {r.key: r.value for r in read_records(bootstrap, topics.OPTOUTS, idle_s=1.0)}
    assert latest[opted.encode()] is None
    assert not any(opted[1:].encode() in (value or b"") for value in latest.values())
    ledger = Rdict(str(tmp_path / "connector" / "ledger"), Options(raw_mode=True))
    try:
        before = json.loads(ledger[b"d:" + decision_id_for("e-1", "welcome").encode()])
    finally:
        ledger.close()
    # The send before the erasure is remembered as done, without the number.
    assert before["erased"] and before["state"] == "done"
    assert texted[1:] not in json.dumps(before)
    capsys.readouterr()
    assert main(["optout", "check", opted]) == 0
    assert "opted out since" in capsys.readouterr().out
