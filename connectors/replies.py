"""Replies: the gateway's incoming-SMS webhook, served by the connector, and what a
STOP reply does.

GatewayAPI posts each SMS sent to the account's number (a mobile-originated message,
MO) as JSON: `msisdn` (the sender, digits with the country code), `message`, `id`,
`senttime` (epoch seconds), `receiver`, `country_code`, and more that are not read
here. When the account sets a secret, the request carries `X-Gwapi-Signature`, a JWT
(HS256) signed with it, which is checked. A reply whose text is a stop keyword opts its
number out of SMS (sms.optouts, channel `sms_reply`); any other reply is answered and
left alone. The gateway retries a request that is not answered 200, so the opt-out is
answered only once Kafka has it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from streams.numbers import InvalidNumber, to_e164
from streams.optouts import normalize_reply

log = logging.getLogger(__name__)

PATH = "/gatewayapi/mo"


@dataclass(frozen=True)
class IncomingSms:
    e164: str
    message: str
    at_ms: int
    message_id: str


class BadReply(ValueError):
    """A webhook body that is not an incoming SMS; the message names the field."""


def parse_incoming(body: Any, now_ms: int) -> IncomingSms:
    """GatewayAPI's MO body as an incoming SMS; BadReply when it is not one."""
    if not isinstance(body, dict):
        raise BadReply("the body must be a JSON object")
    msisdn = body.get("msisdn")
    if isinstance(msisdn, bool) or not isinstance(msisdn, int | str) or \
            not str(msisdn).lstrip("+").isdigit():
        raise BadReply("msisdn must be the sender's number, digits with its country code")
    message = body.get("message")
    if not isinstance(message, str):
        raise BadReply("message must be a string")
    sent = body.get("senttime")
    at_ms = now_ms
    if isinstance(sent, int | float) and not isinstance(sent, bool) and sent > 0:
        at_ms = min(int(sent * 1000), now_ms)  # never dated ahead of its arrival
    try:
        e164 = to_e164("+" + str(msisdn).lstrip("+"), None)
    except InvalidNumber as exc:
        raise BadReply(f"msisdn is not a phone number: {exc.reason}") from None
    return IncomingSms(e164, message, at_ms, str(body.get("id", "")))


def jwt_hs256_valid(token: str, secret: bytes) -> bool:
    """Whether `token` is a JWT signed with `secret` by HS256 (constant-time compare)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64url(parts[0]))
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return False
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = _b64url(parts[2])
    except ValueError:
        return False
    return hmac.compare_digest(expected, given)


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


OptOutWriter = Callable[[str, int], Awaitable[None]]


class ReplyWebhook:
    """The incoming-SMS endpoint. `opt_out(e164, at_ms)` writes the opt-out and returns
    once Kafka has it; `tag` names a number in the log."""

    def __init__(self, opt_out: OptOutWriter, keywords: Iterable[str],
                 tag: Callable[[str], str], secret: bytes = b"") -> None:
        self._opt_out = opt_out
        self._keywords = frozenset(keywords)
        self._tag = tag
        self._secret = secret
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.replies = 0
        self.opted_out = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post(PATH, self._incoming)
        return app

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}{PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _incoming(self, request: web.Request) -> web.Response:
        if self._secret and not jwt_hs256_valid(
                request.headers.get("X-Gwapi-Signature", ""), self._secret):
            return web.json_response({"error": "the X-Gwapi-Signature does not match"},
                                     status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            reply = parse_incoming(body, time.time_ns() // 1_000_000)
        except BadReply as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.replies += 1
        if normalize_reply(reply.message) not in self._keywords:
            log.info("reply %s from %s: not a stop keyword", reply.message_id,
                     self._tag(reply.e164))
            return web.json_response({"opted_out": False})
        try:
            await self._opt_out(reply.e164, reply.at_ms)
        except Exception as exc:
            # Not answered 200: the gateway sends the reply again.
            log.error("reply %s from %s: the opt-out was not written: %s", reply.message_id,
                      self._tag(reply.e164), exc)
            return web.json_response({"error": "the opt-out could not be written; "
                                               "send it again"}, status=503)
        self.opted_out += 1
        log.info("reply %s from %s: a stop keyword; the number is opted out",
                 reply.message_id, self._tag(reply.e164))
        return web.json_response({"opted_out": True})
