"""The connector's incoming-SMS webhook: stop keywords, GatewayAPI's MO body, its
signature, and the endpoint's answers, with the fake gateway posting the replies."""

import asyncio

import pytest

from connectors.fake_gateway import FakeGateway, jwt_hs256
from connectors.replies import BadReply, ReplyWebhook, jwt_hs256_valid, parse_incoming
from streams.optouts import DEFAULT_STOP_KEYWORDS, normalize_reply, parse_keywords

NOW = 1_767_225_600_000


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop ", "S T O P", "stopp", "Afmeld.",
                                  "STOP!", "\tafmeld\n"])
def test_stop_keywords_are_case_and_space_insensitive(text):
    assert normalize_reply(text) in DEFAULT_STOP_KEYWORDS


@pytest.mark.parametrize("text", ["STOP IT PLEASE", "stopped", "yes", "", "NOSTOP"])
def test_other_replies_are_not_stop_keywords(text):
    assert normalize_reply(text) not in DEFAULT_STOP_KEYWORDS


def test_keywords_come_from_a_comma_separated_list_or_the_default():
    assert parse_keywords("") == DEFAULT_STOP_KEYWORDS
    assert parse_keywords("stop, unsubscribe , ,Nej tak") == ("STOP", "UNSUBSCRIBE", "NEJTAK")


def test_a_gatewayapi_incoming_sms_is_read():
    reply = parse_incoming({"id": 1000001, "msisdn": 4520123456, "receiver": 4512345678,
                            "message": "STOP", "senttime": NOW // 1000 - 5}, NOW)
    assert (reply.e164, reply.message, reply.at_ms, reply.message_id) == (
        "+4520123456", "STOP", NOW - 5000, "1000001")
    # Dated ahead of its arrival, it counts from its arrival.
    ahead = parse_incoming({"msisdn": "4520123456", "message": "x",
                            "senttime": NOW // 1000 + 60}, NOW)
    assert ahead.at_ms == NOW


@pytest.mark.parametrize(("body", "field"), [
    ([], "object"), ({"message": "STOP"}, "msisdn"), ({"msisdn": True, "message": "x"}, "msisdn"),
    ({"msisdn": "45-20", "message": "x"}, "msisdn"), ({"msisdn": 4520123456}, "message"),
    ({"msisdn": 999, "message": "x"}, "msisdn is not a phone number"),
])
def test_a_body_that_is_no_incoming_sms_is_refused_naming_the_field(body, field):
    with pytest.raises(BadReply, match=field):
        parse_incoming(body, NOW)


def test_the_signature_is_a_jwt_signed_with_the_secret():
    token = jwt_hs256({"id": 1}, "s3cret")
    assert jwt_hs256_valid(token, b"s3cret")
    assert not jwt_hs256_valid(token, b"other")
    assert not jwt_hs256_valid(token[:-2], b"s3cret")
    assert not jwt_hs256_valid("not.a.jwt!", b"s3cret")
    assert not jwt_hs256_valid("", b"s3cret")


def run_replies(check, *, secret="", fake_secret="", fail=False):
    """Serve a ReplyWebhook on loopback, its opt-outs noted (or refused, as a broker
    that does not answer would), and a fake gateway that posts replies to it."""
    written = []

    async def opt_out(e164, at_ms):
        if fail:
            raise RuntimeError("not written to Kafka: timed out")
        written.append((e164, at_ms))

    async def main():
        webhook = ReplyWebhook(opt_out, DEFAULT_STOP_KEYWORDS, lambda n: "#tag",
                               secret.encode())
        fake = FakeGateway(reply_secret=fake_secret)
        url = await webhook.start("127.0.0.1", 0)
        fake.reply_webhook = url
        base = await fake.start()
        try:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                async def reply(msisdn, message):
                    async with session.post(f"{base}/_fake/reply", json={
                            "msisdn": msisdn, "message": message}) as answer:
                        return await answer.json()

                await check(reply, session, url)
        finally:
            await fake.stop()
            await webhook.stop()

    asyncio.run(main())
    return written


def test_a_stop_reply_opts_the_number_out_and_another_reply_does_not():
    async def check(reply, session, url):
        assert await reply(4520123456, " stop ") == {"status": 200,
                                                     "answer": {"opted_out": True}}
        assert await reply(4520123457, "Thanks!") == {"status": 200,
                                                      "answer": {"opted_out": False}}
        async with session.post(url, data=b"{not json") as answer:
            assert answer.status == 400
        async with session.post(url, json={"msisdn": 1}) as answer:
            assert answer.status == 400 and "message" in (await answer.json())["error"]

    written = run_replies(check)
    assert [e164 for e164, _ in written] == ["+4520123456"]


def test_with_a_secret_only_signed_replies_count():
    async def check(reply, session, url):
        assert (await reply(4520123456, "STOP"))["status"] == 200
        async with session.post(url, json={"msisdn": 4520123457, "message": "STOP"}) as answer:
            assert answer.status == 401

    assert len(run_replies(check, secret="s3cret", fake_secret="s3cret")) == 1


def test_an_opt_out_kafka_did_not_take_is_answered_so_that_the_gateway_retries():
    async def check(reply, session, url):
        answer = await reply(4520123456, "STOP")
        assert answer["status"] == 503 and "send it again" in answer["answer"]["error"]

    assert run_replies(check, fail=True) == []
