"""Phone numbers are personal data: after a run through every path that handles one —
triggers in several written forms, an outside send, refused, retried and timed-out
sends, a STOP reply, an opt-out and an erasure by the command line, bad records — the
logs of every process (broker, worker and its ingest, connector, fake gateway, the
command line) hold none of the test's numbers in any written form."""

from __future__ import annotations

import json
import logging
import re

import pytest

from smscool.processes import ConnectorProcess, FakeGatewayProcess
from streams import topics
from streams.automations import Automation, publish_automation
from streams.kafka import produce_all, producer, read_records
from tests.helpers import decisions_by_event, now_ms, trigger

pytestmark = pytest.mark.integration

WELCOME = Automation("welcome", "Welcome", country="DK", event_type="signup",
                     message="Welcome, {name}!", sender="Shop", cooldown_enabled=True,
                     cooldown_ms=3_600_000)
# National numbers (without +45) unlikely to turn up in a log by chance.
NATIONAL = ["29473817", "28615093", "26904731", "27381946", "25839174", "24718305"]


def written_forms(national: str) -> list[str]:
    spaced = " ".join(national[i:i + 2] for i in range(0, 8, 2))
    return [national, f"45{national}", spaced, national[:4] + " " + national[4:],
            f"{national[:2]}-{national[2:4]}-{national[4:6]}-{national[6:]}"]


def test_no_process_logs_a_raw_number(bootstrap, start_worker, tmp_path, monkeypatch,
                                      capsys, caplog):
    from smscool.cli import main

    caplog.set_level(logging.INFO)
    publish_automation(bootstrap, WELCOME)
    start_worker(SMSCOOL_OPT_OUT_AFTER_FAILURES="1", SMSCOOL_NUMBER_SECRET="s")
    gateway = FakeGatewayProcess(tmp_path / "gateway.log", "test-token",
                                 {"p400": 0.3, "p500": 0.2, "ptimeout": 0.1,
                                  "timeout_delay": 1.0}).start()
    connector = ConnectorProcess(
        bootstrap, gateway.url, "test-token", tmp_path / "connector",
        tmp_path / "connector.log",
        {"SMSCOOL_REPLY_PORT": "0", "SMSCOOL_LOG_LEVEL": "INFO",
         "SMSCOOL_CONNECTOR_TIMEOUT_S": "0.5", "SMSCOOL_CONNECTOR_MAX_ATTEMPTS": "3"})
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("SMSCOOL_NUMBER_SECRET", "s")
    try:
        connector.start()
        t = now_ms()
        forms = [written_forms(n) for n in NATIONAL]
        # Each number in several written forms, some twice (a cooldown suppression).
        triggers = [trigger(f"t-{i}-{j}", form if j else "+45" + NATIONAL[i], t + j)
                    for i, numbers in enumerate(forms) for j, form in enumerate(numbers[:3])]
        triggers.append(trigger("t-bad", "+45 " + NATIONAL[0][:3], t))  # too short
        triggers.append(trigger("t-missing", NATIONAL[1], t, attributes={}))
        produce_all(producer(bootstrap), topics.TRIGGERS,
                    [(f"customer-{n}".encode(), json.dumps(tr).encode())
                     for n, tr in enumerate(triggers)])
        produce_all(producer(bootstrap), topics.SENT, [(b"crm", json.dumps({
            "phone": forms[2][2], "country": "DK", "sent_at_ms": t - 1000,
            "origin": "crm", "message_id": "m-1"}).encode())])
        produce_all(producer(bootstrap), topics.TRIGGERS, [(b"x", b"\x8f garbage " +
                                                            NATIONAL[3].encode())])
        decisions_by_event(bootstrap, len(triggers), 120)
        assert gateway.reply("45" + NATIONAL[4], "stop", connector.reply_url)["status"] == 200
        assert main(["optout", "add", forms[5][2], "--country", "DK"]) == 0
        assert main(["optout", "check", NATIONAL[5], "--country", "DK"]) == 0
        assert main(["erase", "+45" + NATIONAL[0]]) == 0
        connector.logged_after("erased from the ledger", 60)
        read_records(bootstrap, topics.DELIVERY, idle_s=2.0)
    finally:
        connector.stop()
        gateway.stop()
    capsys.readouterr()  # what the command line printed to its user is not a log

    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    logs["the test's own process"] = caplog.text
    assert {"broker.log", "worker-1.log", "connector.log", "gateway.log"} <= logs.keys()
    assert "ingest" in logs["worker-1.log"], "the worker's log has its ingest's too"
    assert "gateway refused decision" in logs["connector.log"], "a refusal was logged"
    found = {}
    for name, text in logs.items():
        for national in NATIONAL:
            for form in written_forms(national):
                if re.search(rf"(?<!\d){re.escape(form)}(?!\d)", text):
                    found.setdefault(name, []).append(form)
    assert not found, f"raw numbers in the logs: {found}"

