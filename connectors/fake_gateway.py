"""A fake SMS gateway: a real HTTP server on loopback for tests and the demo.

It speaks GatewayAPI's request format (`POST /rest/mtsms`) and takes any JSON object at
`POST /webhook`, and fails on purpose: per validated request one draw of a seeded
`random.Random` picks a 500, a 429 (with Retry-After), a 400 (a permanent rejection), a
slow answer after accepting the SMS (so a client with a shorter timeout sees a timeout
although the SMS went out), or acceptance. It records what it accepted and every request
it answered, and exposes that for tests:

    GET  /_fake/accepted   accepted messages: message_id, userref, msisdn, sender,
                           message, accepted_at_ms (+ the body as received)
    GET  /_fake/requests   every request: at (epoch seconds, ms precision), path,
                           status, userref
    POST /_fake/faults     change p500/p429/p400/ptimeout/timeout_delay_s/retry_after_s
                           (and reseed with "seed") at runtime
    POST /_fake/reset      clear both records
    POST /_fake/reply      {"msisdn": 4520123456, "message": "STOP", "webhook": URL}: a
                           phone's reply, posted to the webhook (default: --reply-webhook)
                           as GatewayAPI posts an incoming SMS (signed with --reply-secret,
                           if given); answers with the webhook's status and answer

Run it alone with `python -m connectors.fake_gateway --port 0`: it prints its URL as the
first line and serves until SIGTERM or SIGINT. It never logs request bodies (they hold
phone numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import signal
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

FAULTS = ("p500", "p429", "p400", "ptimeout")
SETTINGS = (*FAULTS, "timeout_delay_s", "retry_after_s")
_SENDER = re.compile(r"[A-Za-z0-9]{1,11}|[0-9]{1,15}")


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"code": code, "message": message, **extra}, status=status)


def _invalid_mtsms(body: Any) -> str | None:
    """Why a /rest/mtsms body is invalid, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    sender = body.get("sender")
    if not isinstance(sender, str) or not _SENDER.fullmatch(sender):
        return "sender must be 1-11 letters or digits, or up to 15 digits"
    message = body.get("message")
    if not isinstance(message, str) or not message:
        return "message must be a non-empty string"
    recipients = body.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        return "recipients must be a non-empty list"
    for recipient in recipients:
        msisdn = recipient.get("msisdn") if isinstance(recipient, dict) else None
        # bool is an int to Python, not to GatewayAPI
        if not isinstance(msisdn, int) or isinstance(msisdn, bool) or msisdn <= 0:
            return "each recipient must be {\"msisdn\": <integer>}"
    # GatewayAPI treats userref as optional; when given it must be a string.
    if "userref" in body and not isinstance(body["userref"], str):
        return "userref must be a string"
    return None


class FakeGateway:
    """The fake gateway's state and routes; `start()` serves it on a loopback port."""

    def __init__(
        self, token: str = "fake-token", *, p500: float = 0.0, p429: float = 0.0,
        p400: float = 0.0, ptimeout: float = 0.0, timeout_delay_s: float = 5.0,
        retry_after_s: float = 1.0, seed: int = 0, reply_webhook: str = "",
        reply_secret: str = "",
    ) -> None:
        self.token = token
        self.reply_webhook = reply_webhook
        self.reply_secret = reply_secret
        self.faults: dict[str, float] = {}
        self.set_faults({"p500": p500, "p429": p429, "p400": p400, "ptimeout": ptimeout,
                         "timeout_delay_s": timeout_delay_s, "retry_after_s": retry_after_s})
        self.random = random.Random(seed)
        self.accepted: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._next_id = 1_000_001
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.base_url = ""

    def set_faults(self, changes: dict[str, Any]) -> None:
        """Apply fault settings; ValueError, and nothing changed, when one is wrong."""
        unknown = sorted(set(changes) - set(SETTINGS) - {"seed"})
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        merged = dict(self.faults)
        for key in SETTINGS:
            if key in changes:
                value = changes[key]
                if (isinstance(value, bool) or not isinstance(value, int | float)
                        or not math.isfinite(value) or value < 0):
                    raise ValueError(f"{key} must be a number >= 0")
                merged[key] = float(value)
        if any(merged[key] > 1 for key in FAULTS) or sum(merged[k] for k in FAULTS) > 1:
            raise ValueError("fault probabilities must each be <= 1 and sum to <= 1")
        if "seed" in changes and not isinstance(changes["seed"], int | str):
            raise ValueError("seed must be a whole number or a string")
        if "seed" in changes:
            self.random = random.Random(changes["seed"])
        self.faults = merged

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/rest/mtsms", self._mtsms)
        app.router.add_post("/webhook", self._webhook)
        app.router.add_get("/_fake/accepted", self._list_accepted)
        app.router.add_get("/_fake/requests", self._list_requests)
        app.router.add_post("/_fake/faults", self._set_faults)
        app.router.add_post("/_fake/reset", self._reset)
        app.router.add_post("/_fake/reply", self._reply)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: a free port) and return the base URL."""
        self._stopping = asyncio.Event()  # made here: an Event belongs to one loop
        # access_log=None: the default access log is one line per request; we keep
        # the server quiet rather than vet what each line might carry.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # ends the slow answers now rather than after their delay
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- routes -----------------------------------------------------------------------

    async def _mtsms(self, request: web.Request) -> web.StreamResponse:
        at = round(time.time(), 3)
        if request.headers.get("Authorization") != f"Token {self.token}":
            return self._answered(at, request, None,
                                  _error(401, "0x0101", "invalid or missing API token"))
        body = await self._json(request)
        why = _invalid_mtsms(body)
        if why:
            userref = body.get("userref") if isinstance(body, dict) else None
            return self._answered(at, request, userref, _error(400, "0x0203", why))
        userref = body.get("userref")
        fault = self._fault()
        if fault == "p400":
            # Real GatewayAPI errors carry the offending values in "variables".
            return self._answered(at, request, userref, _error(
                400, "0x0216", "invalid recipient",
                variables=[str(r["msisdn"]) for r in body["recipients"]]))
        if fault in ("p500", "p429"):
            return self._answered(at, request, userref, self._fault_response(fault))
        message_id = self._take_id()
        for recipient in body["recipients"]:
            self._accept(message_id, userref, recipient["msisdn"], body.get("sender"),
                         body.get("message"), body)
        answer = {"ids": [message_id],
                  "usage": {"currency": "EUR", "total_cost": 0.0,
                            "countries": {}, "fake": True}}
        return await self._answer_accepted(at, request, userref, answer, fault == "ptimeout")

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        at = round(time.time(), 3)
        body = await self._json(request)
        if not isinstance(body, dict):
            return self._answered(at, request, None,
                                  _error(400, "0x0203", "body must be a JSON object"))
        userref = body.get("reference", body.get("userref"))
        fault = self._fault()
        if fault == "p400":
            return self._answered(at, request, userref,
                                  _error(400, "0x0216", "invalid recipient"))
        if fault in ("p500", "p429"):
            return self._answered(at, request, userref, self._fault_response(fault))
        message_id = f"wh-{self._take_id()}"
        recipient = body.get("msisdn", body.get("to"))
        digits = str(recipient).lstrip("+") if recipient is not None else ""
        self._accept(message_id, userref, int(digits) if digits.isdigit() else recipient,
                     body.get("from", body.get("sender")), body.get("text", body.get("message")),
                     body, headers=dict(request.headers))
        return await self._answer_accepted(at, request, userref, {"id": message_id},
                                           fault == "ptimeout")

    async def _list_accepted(self, _: web.Request) -> web.Response:
        return web.json_response(self.accepted)

    async def _list_requests(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _set_faults(self, request: web.Request) -> web.Response:
        changes = await self._json(request)
        if not isinstance(changes, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        try:
            self.set_faults(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults)

    async def _reset(self, _: web.Request) -> web.Response:
        self.accepted.clear()
        self.requests.clear()
        return web.json_response({"reset": True})

    async def _reply(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or "msisdn" not in body or "message" not in body:
            return web.json_response({"error": "expected {\"msisdn\": …, \"message\": …}"},
                                     status=400)
        webhook = body.get("webhook") or self.reply_webhook
        if not webhook:
            return web.json_response({"error": "no webhook: give one, or --reply-webhook"},
                                     status=400)
        incoming = {
            "id": self._take_id(), "msisdn": int(str(body["msisdn"]).lstrip("+")),
            "receiver": 4512345678, "message": body["message"],
            "senttime": int(time.time()), "webhook_label": "fake-gateway",
            "encoding": "UTF8",
        }
        headers = {}
        if self.reply_secret:
            headers["X-Gwapi-Signature"] = jwt_hs256(
                {"id": incoming["id"], "iat": incoming["senttime"]}, self.reply_secret)
        async with aiohttp.ClientSession() as session, session.post(
                webhook, json=incoming, headers=headers,
                timeout=aiohttp.ClientTimeout(total=30)) as answer:
            text = await answer.text()
        try:
            answered: Any = json.loads(text)
        except ValueError:
            answered = text
        return web.json_response({"status": answer.status, "answer": answered})

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError:
            return None

    def _fault(self) -> str | None:
        """One draw per validated request: which fault, if any, this one gets."""
        draw = self.random.random()
        for fault in FAULTS:
            if draw < self.faults[fault]:
                return fault
            draw -= self.faults[fault]
        return None

    def _fault_response(self, fault: str) -> web.Response:
        if fault == "p429":
            response = _error(429, "0x0429", "too many requests")
            response.headers["Retry-After"] = f"{self.faults['retry_after_s']:g}"
            return response
        return _error(500, "0x0500", "internal error")

    def _take_id(self) -> int:
        message_id = self._next_id
        self._next_id += 1
        return message_id

    def _accept(self, message_id: int | str, userref: Any, msisdn: Any, sender: Any,
                message: Any, body: Any, **extra: Any) -> None:
        self.accepted.append({
            "message_id": message_id, "userref": userref, "msisdn": msisdn, "sender": sender,
            "message": message, "accepted_at_ms": int(time.time() * 1000), "body": body,
            **extra,
        })

    def _answered(self, at: float, request: web.Request, userref: Any,
                  response: web.Response, **extra: Any) -> web.Response:
        self.requests.append({"at": at, "path": request.path, "status": response.status,
                              "userref": userref, **extra})
        return response

    async def _answer_accepted(self, at: float, request: web.Request, userref: Any,
                               answer: dict[str, Any], slow: bool) -> web.Response:
        response = web.json_response(answer)
        self._answered(at, request, userref, response, slow=slow)
        if slow and self._stopping is not None:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.faults["timeout_delay_s"])
            except TimeoutError:
                pass
        return response


def jwt_hs256(claims: dict[str, Any], secret: str) -> str:
    """A JWT of `claims` signed with `secret` by HS256, as GatewayAPI signs webhooks."""
    import base64
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signed = f"{part(header)}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{part(signature)}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m connectors.fake_gateway",
                                description="Run a fake SMS gateway on loopback.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    p.add_argument("--token", default="fake-token", help="the API token it expects")
    p.add_argument("--p500", type=float, default=0.0, help="share of answers that are 500")
    p.add_argument("--p429", type=float, default=0.0, help="share of answers that are 429")
    p.add_argument("--p400", type=float, default=0.0, help="share of permanent rejections")
    p.add_argument("--ptimeout", type=float, default=0.0,
                   help="share accepted but answered only after --timeout-delay")
    p.add_argument("--timeout-delay", type=float, default=5.0, dest="timeout_delay_s")
    p.add_argument("--retry-after", type=float, default=1.0, dest="retry_after_s",
                   help="Retry-After seconds on 429")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reply-webhook", dest="reply_webhook", default="",
                   help="where /_fake/reply posts a phone's reply (the connector's "
                        "incoming-SMS webhook)")
    p.add_argument("--reply-secret", dest="reply_secret", default="",
                   help="sign the replies it posts with this secret (X-Gwapi-Signature)")
    return p


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeGateway(args.token, p500=args.p500, p429=args.p429, p400=args.p400,
                       ptimeout=args.ptimeout, timeout_delay_s=args.timeout_delay_s,
                       retry_after_s=args.retry_after_s, seed=args.seed,
                       reply_webhook=args.reply_webhook, reply_secret=args.reply_secret)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = await fake.start(args.host, args.port)
    print(f"fake gateway listening: {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:  # fault settings out of range
        print(f"fake gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
