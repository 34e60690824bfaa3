"""`smscool web`: the REST API over the automations, JSON over HTTP.

A process of its own, beside the workers: what it serves is the automation catalog
(the compacted topic every worker reads) and writes to it, so it needs none of a
worker's state, scales and restarts apart from them, and a worker stays a worker.

    GET  /healthz                              the process is up
    GET  /readyz                               the catalog is loaded
    GET  /automations                          every automation
    GET  /automations/{id}                     one
    POST /automations                          create: {"automation_id": …, fields…}
    PATCH /automations/{id}                    update the fields given
    POST /automations/{id}/enable              (and /disable: its held messages end)
    GET  /automations/{id}/counts              its decisions by outcome, last hour and day

Every write needs `Authorization: Bearer <SMSCOOL_WEB_TOKEN>`, and so does every read
unless `SMSCOOL_WEB_OPEN_READS=true` and the request comes from loopback. Errors are
JSON naming the field and why (`{"field": "sender", "error": "…"}`), with status 400
(invalid), 401 (no or a wrong token), 404, 409 (exists already); never a stack trace.
The fields and their checks are those of the command line (`streams.validation`).
`docs/openapi.yaml` describes the API.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streams import codecs, topics
from streams.automations import Automation, Catalog, CatalogFollower, publish_automation
from streams.kafka import ensure_topics
from streams.settings import Settings
from streams.validation import FieldError, attributes_of, build_automation, sms_length

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def automation_json(automation: Automation) -> dict[str, Any]:
    """An automation as the API shows it: its fields, the attributes its message uses
    and the message's length in SMS parts as written."""
    length = sms_length(automation.message)
    return {**automation.to_record(), "attributes": attributes_of(automation.message),
            "message_length": {"encoding": length.encoding, "units": length.units,
                               "parts": length.parts}}


def _error(status: int, field: str | None, error: str) -> web.Response:
    return web.json_response({"field": field, "error": error}, status=status)


def _errors(errors: list[FieldError]) -> web.Response:
    first = errors[0]
    return web.json_response({"field": first.field, "error": first.error,
                              "errors": [{"field": e.field, "error": e.error}
                                         for e in errors]}, status=400)


HOUR_MS, DAY_MS = 3_600_000, 86_400_000


class DecisionCounts:
    """Decisions by automation and outcome, per minute of `decided_at_ms`, read from
    sms.decisions (from its start, outside any group); a decision given again (a replay)
    counts once. `add` takes one record's value; `since` sums from a moment on."""

    def __init__(self) -> None:
        self._minutes: dict[str, dict[int, Counter[str]]] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (decision id, outcome) -> minute

    def add(self, value: bytes | None, now_ms: int) -> None:
        try:
            decision = codecs.DECISION.decode(value)
        except codecs.CodecError:
            return
        minute = decision["decided_at_ms"] // 60_000
        if minute < (now_ms - DAY_MS) // 60_000:
            return  # older than anything asked for
        seen = (decision["decision_id"], decision["outcome"])
        if seen in self._seen:
            return
        self._seen[seen] = minute
        automation = decision["automation_id"] or ""
        self._minutes.setdefault(automation, {}).setdefault(minute, Counter())[
            decision["outcome"]] += 1

    def since(self, automation_id: str, from_ms: int) -> dict[str, int]:
        total: Counter[str] = Counter()
        for minute, counts in self._minutes.get(automation_id, {}).items():
            if minute * 60_000 >= from_ms - 59_999:
                total.update(counts)
        return dict(sorted(total.items()))

    def forget_before(self, from_ms: int) -> None:
        first = from_ms // 60_000
        for minutes in self._minutes.values():
            for minute in [m for m in minutes if m < first]:
                del minutes[minute]
        self._seen = {k: m for k, m in self._seen.items() if m >= first}


class AutomationsApi:
    """The routes, over a catalog kept in step by `follower` (polled before each read)
    and a `publish` that writes a definition and returns once Kafka has it."""

    def __init__(self, settings: Settings, catalog: Catalog, follower: Any,
                 publish: Callable[[Automation], None],
                 cancel_held: Callable[[str], None],
                 decisions: Callable[[], DecisionCounts] | None = None) -> None:
        self.settings = settings
        self.decisions = decisions
        self.catalog = catalog
        self.follower = follower
        self.publish = publish
        self.cancel_held = cancel_held
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=256 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/automations", self._list)
        app.router.add_post("/automations", self._create)
        app.router.add_get("/automations/{automation_id}", self._get)
        app.router.add_patch("/automations/{automation_id}", self._update)
        app.router.add_post("/automations/{automation_id}/enable", self._enable)
        app.router.add_post("/automations/{automation_id}/disable", self._disable)
        app.router.add_get("/automations/{automation_id}/counts", self._counts)
        return app

    # -- authentication and errors ----------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in ("/healthz", "/readyz") and not self._allowed(request):
            return _error(401, None, "a bearer token is needed (Authorization: Bearer …)")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return _error(exc.status, None, exc.reason)
        except Exception:
            log.exception("web: %s %s failed", request.method, request.path)
            return _error(500, None, "the request failed; the server's log says why")

    def _allowed(self, request: web.Request) -> bool:
        token = self.settings.web_token
        given = request.headers.get("Authorization", "")
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        if request.method == "GET" and self.settings.web_open_reads:
            peer = request.remote or ""
            try:
                return ipaddress.ip_address(peer).is_loopback
            except ValueError:
                return False
        return False

    # -- routes -----------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "loading the automation catalog"},
                                     status=503)
        return web.json_response({"status": "ready", "automations": len(self.catalog)})

    async def _list(self, _: web.Request) -> web.Response:
        self.follower.poll()
        return web.json_response([automation_json(a) for a in self.catalog.all()])

    async def _get(self, request: web.Request) -> web.Response:
        automation = self._find(request)
        return web.json_response(automation_json(automation))

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        automation_id = body.pop("automation_id", None)
        if not isinstance(automation_id, str) or not automation_id.strip():
            return _error(400, "automation_id", "an automation needs an id (a string)")
        self.follower.poll()
        if self.catalog.get(automation_id) is not None:
            return _error(409, "automation_id", f"automation {automation_id} exists; "
                                                f"PATCH /automations/{automation_id}")
        automation, errors = build_automation(automation_id, body, None, _now_ms())
        if automation is None:
            return _errors(errors)
        await self._write(automation)
        return web.json_response(automation_json(automation), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        current = self._find(request)
        body = await self._body(request)
        if "automation_id" in body:
            return _error(400, "automation_id", "an automation's id cannot change")
        automation, errors = build_automation(current.automation_id, body, current, _now_ms())
        if automation is None:
            return _errors(errors)
        await self._write(automation)
        return web.json_response(automation_json(automation))

    async def _enable(self, request: web.Request) -> web.Response:
        automation = self._find(request).updated(enabled=True, updated_at_ms=_now_ms())
        await self._write(automation)
        return web.json_response(automation_json(automation))

    async def _disable(self, request: web.Request) -> web.Response:
        automation = self._find(request).updated(enabled=False, updated_at_ms=_now_ms())
        await self._write(automation)
        # Its held messages must not go out either: each gets `automation_disabled`.
        await asyncio.get_running_loop().run_in_executor(
            None, self.cancel_held, automation.automation_id)
        return web.json_response(automation_json(automation))

    async def _counts(self, request: web.Request) -> web.Response:
        automation = self._find(request)
        if self.decisions is None:
            return _error(503, None, "decision counts are not served here")
        counts = await asyncio.get_running_loop().run_in_executor(None, self.decisions)
        now = _now_ms()
        return web.json_response({
            "automation_id": automation.automation_id,
            "last_hour": counts.since(automation.automation_id, now - HOUR_MS),
            "last_day": counts.since(automation.automation_id, now - DAY_MS)})

    # -- helpers ----------------------------------------------------------------------

    def _find(self, request: web.Request) -> Automation:
        self.follower.poll()
        automation_id = request.match_info["automation_id"]
        automation = self.catalog.get(automation_id)
        if automation is None:
            raise web.HTTPNotFound(reason=f"no automation {automation_id}")
        return automation

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(reason="the body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(reason="the body must be a JSON object")
        return body

    async def _write(self, automation: Automation) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.publish, automation)
        self.catalog.put(automation)  # read back at once; the follower agrees later


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API on SMSCOOL_WEB_HOST:SMSCOOL_WEB_PORT until `stop` is set."""
    from streams.held import send_cancel
    from streams.outcomes import AUTOMATION_DISABLED

    bootstrap = settings.require_bootstrap()
    catalog = Catalog()
    follower = CatalogFollower(catalog, bootstrap)

    def cancel_held(automation_id: str) -> None:
        send_cancel(bootstrap, settings.partitions, automation_id, AUTOMATION_DISABLED,
                    settings.clock.now_ms())

    ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
    counts = DecisionCounts()
    reader = _decisions_reader(bootstrap)
    reading = threading.Lock()  # requests ask from threads of their own

    def decisions() -> DecisionCounts:
        """The counts, with what sms.decisions got since the last call added."""
        with reading:
            return _read_decisions(reader, counts)

    api = AutomationsApi(settings, catalog, follower,
                         lambda a: publish_automation(bootstrap, a), cancel_held, decisions)
    runner = web.AppRunner(api.app(), access_log=None)  # a log line could carry a token
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    host, port = runner.addresses[0][:2]
    print(f"REST API listening: http://{host}:{port}", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, follower.load)
        api.ready = True
        await stop.wait()
    finally:
        await runner.cleanup()
        follower.close()
        reader.close()


def _read_decisions(reader: Any, counts: DecisionCounts) -> DecisionCounts:
    """`counts` with what sms.decisions got since the last read added."""
    now = _now_ms()
    while True:
        batch = reader.consume(5000, timeout=0.2)
        for message in batch:
            if message.error() is None:
                counts.add(message.value(), now)
        if len(batch) < 5000:
            break
    counts.forget_before(now - DAY_MS)
    return counts


def _decisions_reader(bootstrap: str) -> Any:
    """sms.decisions from its start, every partition, outside any consumer group."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka import librdkafka_log

    consumer = Consumer({"bootstrap.servers": bootstrap, "logger": librdkafka_log,
                         "group.id": "smscool-web-decisions", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    metadata = consumer.list_topics(topics.DECISIONS, timeout=10).topics[topics.DECISIONS]
    consumer.assign([TopicPartition(topics.DECISIONS, p, 0) for p in metadata.partitions])
    return consumer
