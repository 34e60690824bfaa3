"""`smscool automation create|update` refuses what a gateway would refuse later, naming
the field, and shows what a message uses and how many SMS parts it takes."""

from __future__ import annotations

import pytest

from streams.automations import read_catalog

pytestmark = pytest.mark.integration

CREATE = ["automation", "create", "welcome", "--title", "Welcome", "--event-type", "signup",
          "--country", "DK", "--message", "Hi {name}, welcome to {shop}", "--sender", "Shop"]


def with_option(args: list[str], option: str, value: str) -> list[str]:
    at = args.index(option)
    return [*args[:at + 1], value, *args[at + 2:]]


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--sender", "A" * 22, "--sender: an alphanumeric sender has at most 11 characters"),
    ("--sender", "", "--sender: a sender is needed"),
    ("--title", "", "--title: a title is needed"),
    ("--message", " ", "--message: a message is needed"),
])
def test_create_refuses_what_a_gateway_would_refuse(bootstrap, monkeypatch, capsys, option,
                                                    value, said):
    from smscool.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    assert main(with_option(CREATE, option, value)) == 2
    assert said in capsys.readouterr().err
    assert read_catalog(bootstrap).get("welcome") is None


def test_create_and_update_show_the_messages_attributes_and_parts(bootstrap, monkeypatch,
                                                                   capsys):
    from smscool.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    assert main(CREATE) == 0
    assert ("message uses {name}, {shop}; as written, 1 SMS part(s) in GSM-7"
            in capsys.readouterr().out)
    assert main(["automation", "update", "welcome", "--sender", "Shop™"]) == 2
    assert "--sender: a sender takes characters of the GSM alphabet only" in \
        capsys.readouterr().err
    assert main(["automation", "update", "welcome", "--message", "Привет " * 20]) == 0
    assert "3 SMS part(s) in UCS-2" in capsys.readouterr().out
    assert read_catalog(bootstrap).get("welcome").sender == "Shop"
