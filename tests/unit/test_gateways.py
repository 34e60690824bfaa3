"""The gateway adapters against the fake gateway on a real loopback port: what each
HTTP answer and transport failure becomes, the exact request the gateway receives, and
the configuration read from the environment."""

import asyncio
import json
import socket
from functools import partial

import aiohttp
import pytest

from connectors.gateways import (
    ACCEPTED,
    AMBIGUOUS,
    DEFAULT_WEBHOOK_BODY,
    RATE_LIMITED,
    REJECTED,
    RETRYABLE,
    UNREACHABLE,
    GatewayApi,
    GatewayConfig,
    OutgoingSms,
    Webhook,
    build_gateway,
    classify,
    parse_retry_after,
    scrub,
)
from tests.helpers import run_with_fake

TOKEN = "tok-secret-123"
SMS = OutgoingSms(decision_id="d-7f3a", e164="+4520123456", text="Hej! 20% off", sender="Shop")


with_fake = partial(run_with_fake, token=TOKEN)


def send_gatewayapi(sms=SMS, token=TOKEN, timeout_s=5.0, **fake_options):
    async def scenario(fake, base_url, session):
        return await GatewayApi(base_url, token).send(session, sms, timeout_s), fake

    return with_fake(scenario, **fake_options)


def webhook(base_url, **options):
    options.setdefault("headers", {"Authorization": "Bearer wh-secret"})
    options.setdefault("body_template", DEFAULT_WEBHOOK_BODY)
    return Webhook(f"{base_url}/webhook", **options)


def send_webhook(sms=SMS, timeout_s=5.0, fake_options=None, **webhook_options):
    async def scenario(fake, base_url, session):
        return await webhook(base_url, **webhook_options).send(session, sms, timeout_s), fake

    return with_fake(scenario, **(fake_options or {}))


def free_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_number(text):
    assert "4520123456" not in text
    assert "20123456" not in text


# --- GatewayAPI ---------------------------------------------------------------------------


def test_gatewayapi_accepted_with_message_id():
    result, fake = send_gatewayapi()
    assert result.kind == ACCEPTED and result.status == 200
    assert result.message_id == str(fake.accepted[0]["message_id"])
    assert result.retry_after_s is None
    assert_no_number(result.detail)


def test_gatewayapi_sends_the_exact_body():
    result, fake = send_gatewayapi()
    assert result.kind == ACCEPTED
    [accepted] = fake.accepted
    # The fake only accepts `Authorization: Token <token>`, so acceptance proves the header.
    assert accepted["body"] == {
        "sender": "Shop",
        "message": "Hej! 20% off",
        "recipients": [{"msisdn": 4520123456}],
        "userref": "d-7f3a",
    }
    assert type(accepted["body"]["recipients"][0]["msisdn"]) is int
    assert (accepted["userref"], accepted["msisdn"]) == ("d-7f3a", 4520123456)


def test_gatewayapi_500_is_retryable():
    result, fake = send_gatewayapi(p500=1.0)
    assert (result.kind, result.status, result.message_id) == (RETRYABLE, 500, None)
    assert fake.accepted == []


def test_gatewayapi_429_is_rate_limited_with_retry_after():
    result, _ = send_gatewayapi(p429=1.0, retry_after_s=2.5)
    assert (result.kind, result.status, result.retry_after_s) == (RATE_LIMITED, 429, 2.5)


def test_gatewayapi_400_is_rejected_with_code_and_no_number():
    result, fake = send_gatewayapi(p400=1.0)
    assert (result.kind, result.status) == (REJECTED, 400)
    assert "0x0216" in result.detail and "invalid recipient" in result.detail
    # The fake echoes the number in "variables", as GatewayAPI does; it must be scrubbed.
    assert "<number>" in result.detail
    assert_no_number(result.detail)
    assert fake.accepted == []


def test_gatewayapi_wrong_token_is_rejected_401():
    result, fake = send_gatewayapi(token="wrong")
    assert (result.kind, result.status) == (REJECTED, 401)
    assert fake.accepted == [] and fake.requests[0]["status"] == 401


def test_gatewayapi_timeout_after_accepting_is_ambiguous():
    result, fake = send_gatewayapi(timeout_s=0.3, ptimeout=1.0, timeout_delay_s=1.0)
    assert (result.kind, result.status, result.message_id) == (AMBIGUOUS, None, None)
    assert result.detail == "TimeoutError"
    # ... although the SMS went out: exactly why the connector must not treat it as failed.
    assert [a["userref"] for a in fake.accepted] == ["d-7f3a"]


def test_closed_port_is_unreachable():
    async def main():
        async with aiohttp.ClientSession() as session:
            api = GatewayApi(f"http://127.0.0.1:{free_closed_port()}", TOKEN)
            hook = Webhook(f"http://127.0.0.1:{free_closed_port()}/hook", {},
                           DEFAULT_WEBHOOK_BODY)
            return [await api.send(session, SMS, 2.0), await hook.send(session, SMS, 2.0)]

    for result in asyncio.run(main()):
        assert (result.kind, result.status) == (UNREACHABLE, None)
        assert result.detail.startswith("ClientConnectorError")


def test_not_an_e164_number_is_rejected_without_sending():
    result, fake = send_gatewayapi(sms=OutgoingSms("d-1", "4520123456", "hi", "Shop"))
    assert (result.kind, result.status) == (REJECTED, None)
    assert fake.requests == []


# --- Webhook ------------------------------------------------------------------------------


def test_webhook_substitutes_with_json_escaping():
    text = 'Say "hi"\nto {e164} & back\\slash \u00e6\u00f8\u00e5 \U0001f600 {"x": 1}'
    sms = OutgoingSms("d-\"q\"", "+4520123456", text, "Shop")
    template = json.dumps({
        "to": "{e164}", "n": "{msisdn}", "nested": {"msg": "{sender}: {text}"},
        "list": ["ref={decision_id}", 7, None, True], "{text}": "keys stay",
    })
    result, fake = send_webhook(sms=sms, body_template=template)
    assert (result.kind, result.status) == (ACCEPTED, 200)
    [accepted] = fake.accepted
    assert result.message_id == accepted["message_id"] and result.message_id.startswith("wh-")
    assert accepted["body"] == {
        "to": "+4520123456", "n": 4520123456, "nested": {"msg": f"Shop: {text}"},
        "list": ['ref=d-"q"', 7, None, True], "{text}": "keys stay",
    }
    assert accepted["headers"]["Authorization"] == "Bearer wh-secret"
    assert accepted["headers"]["Content-Type"].startswith("application/json")


def test_webhook_default_template():
    result, fake = send_webhook()
    assert result.kind == ACCEPTED
    assert fake.accepted[0]["body"] == {
        "to": "+4520123456", "from": "Shop", "text": "Hej! 20% off", "reference": "d-7f3a"}
    assert (fake.accepted[0]["userref"], fake.accepted[0]["msisdn"]) == ("d-7f3a", 4520123456)


def test_webhook_id_field_none_gives_no_message_id():
    result, _ = send_webhook(id_field=None)
    assert (result.kind, result.message_id) == (ACCEPTED, None)


@pytest.mark.parametrize("faults, kind, status", [
    ({"p500": 1.0}, RETRYABLE, 500),
    ({"p429": 1.0}, RATE_LIMITED, 429),
    ({"p400": 1.0}, REJECTED, 400),
])
def test_webhook_failures(faults, kind, status):
    result, _ = send_webhook(fake_options=faults)
    assert (result.kind, result.status) == (kind, status)


def test_webhook_timeout_is_ambiguous():
    result, fake = send_webhook(timeout_s=0.3,
                                fake_options={"ptimeout": 1.0, "timeout_delay_s": 1.0})
    assert result.kind == AMBIGUOUS and len(fake.accepted) == 1


def test_webhook_template_errors():
    with pytest.raises(ValueError, match="not valid JSON"):
        Webhook("http://127.0.0.1/x", {}, '{"to": "{e164}"')
    with pytest.raises(ValueError, match=r"no \{e164\} or \{msisdn\}"):
        Webhook("http://127.0.0.1/x", {}, '{"text": "{text}"}')
    with pytest.raises(ValueError, match="http"):
        Webhook("ftp://127.0.0.1/x", {}, DEFAULT_WEBHOOK_BODY)


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize("status, kind", [
    (200, ACCEPTED), (202, ACCEPTED), (204, ACCEPTED),
    (301, REJECTED), (302, REJECTED),
    (400, REJECTED), (401, REJECTED), (403, REJECTED), (404, REJECTED), (422, REJECTED),
    (408, RETRYABLE), (429, RATE_LIMITED),
    (500, RETRYABLE), (502, RETRYABLE), (503, RETRYABLE), (504, RETRYABLE),
])
def test_classify_status(status, kind):
    assert classify(status, {}, "", SMS).kind == kind


def test_retry_after_as_http_date():
    now = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now_s=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 -0000", now_s=now) == 30.0
    assert parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now_s=now) == 0.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0.5 ") == 0.5
    for unreadable in (None, "", "soon", "-3", "nan", "Thu, 99 Foo 2026"):
        assert parse_retry_after(unreadable) is None


def test_retry_after_on_429_and_503():
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    limited = classify(429, {"Retry-After": later}, "", SMS)
    assert limited.kind == RATE_LIMITED and limited.retry_after_s > 3600
    assert classify(503, {"Retry-After": "12"}, "", SMS).retry_after_s == 12.0
    assert classify(503, {}, "", SMS).retry_after_s is None
    assert classify(429, {"Retry-After": "whenever"}, "", SMS).retry_after_s is None


def test_detail_is_scrubbed_and_capped():
    body = ("bad number +4520123456 / 4520123456 / +45 20 12 34 56 / 0045-2012-3456 "
            + "x" * 1000)
    detail = classify(400, {}, body, SMS).detail
    assert detail.count("<number>") == 4
    assert_no_number(detail.replace(" ", "").replace("-", ""))
    assert len(detail) == 500
    assert scrub("ids 12345", SMS) == "ids 12345"


# --- configuration ------------------------------------------------------------------------


def test_config_defaults_and_gatewayapi():
    config = GatewayConfig.from_env({"SMSCOOL_GATEWAYAPI_TOKEN": TOKEN})
    assert (config.gateway, config.gatewayapi_url) == ("gatewayapi", "https://gatewayapi.com")
    gateway = build_gateway(config)
    assert isinstance(gateway, GatewayApi) and gateway.name == "gatewayapi"
    assert gateway.base_url == "https://gatewayapi.com"


def test_config_webhook():
    config = GatewayConfig.from_env({
        "SMSCOOL_GATEWAY": "webhook", "SMSCOOL_WEBHOOK_URL": "https://sms.example/send",
        "SMSCOOL_WEBHOOK_HEADERS": '{"X-Api-Key": "k-secret"}',
        "SMSCOOL_WEBHOOK_ID_FIELD": "",
    })
    gateway = build_gateway(config)
    assert isinstance(gateway, Webhook) and gateway.name == "webhook"
    assert gateway.id_field is None
    assert gateway.body(SMS)["to"] == "+4520123456"


def test_gateway_override_beats_the_environment():
    env = {"SMSCOOL_GATEWAY": "webhook", "SMSCOOL_GATEWAYAPI_TOKEN": TOKEN}
    assert GatewayConfig.from_env(env, gateway="gatewayapi").gateway == "gatewayapi"
    assert GatewayConfig.from_env(env).gateway == "webhook"


@pytest.mark.parametrize("env, message", [
    ({}, "SMSCOOL_GATEWAYAPI_TOKEN is not set"),
    ({"SMSCOOL_GATEWAY": "webhook"}, "SMSCOOL_WEBHOOK_URL is not set"),
    ({"SMSCOOL_GATEWAY": "carrier-pigeon"}, "SMSCOOL_GATEWAY must be one of"),
    ({"SMSCOOL_GATEWAYAPI_TOKEN": "t", "SMSCOOL_GATEWAYAPI_URL": "gatewayapi.com"},
     "SMSCOOL_GATEWAYAPI_URL"),
    ({"SMSCOOL_GATEWAY": "webhook", "SMSCOOL_WEBHOOK_URL": "http://h/x",
      "SMSCOOL_WEBHOOK_BODY": "{not json"}, "SMSCOOL_WEBHOOK_BODY"),
])
def test_config_errors(env, message):
    with pytest.raises(ValueError, match=message):
        build_gateway(GatewayConfig.from_env(env))


@pytest.mark.parametrize("headers", ['{"X-Api-Key": "k-secret"', '["k-secret"]',
                                     '{"X-Api-Key": 12345}'])
def test_bad_headers_are_refused_without_quoting_them(headers):
    with pytest.raises(ValueError, match="SMSCOOL_WEBHOOK_HEADERS") as caught:
        GatewayConfig.from_env({"SMSCOOL_WEBHOOK_HEADERS": headers})
    assert "k-secret" not in str(caught.value) and "12345" not in str(caught.value)


def test_repr_hides_token_and_headers():
    config = GatewayConfig.from_env({
        "SMSCOOL_GATEWAYAPI_TOKEN": TOKEN, "SMSCOOL_WEBHOOK_URL": "https://h/x?key=q-secret",
        "SMSCOOL_WEBHOOK_HEADERS": '{"X-Api-Key": "k-secret"}',
    })
    shown = repr(config)
    assert TOKEN not in shown and "k-secret" not in shown
    assert TOKEN not in repr(GatewayApi("https://gatewayapi.com", TOKEN))
    hook = Webhook(config.webhook_url, config.webhook_headers, DEFAULT_WEBHOOK_BODY)
    assert "k-secret" not in repr(hook) and "q-secret" not in repr(hook)
    assert "X-Api-Key" in repr(hook)
