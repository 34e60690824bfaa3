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
    GET  /automations/{id}/why?number=…        the number's latest decisions and causes
    POST /check                                a message's facts, a country's time zone
    GET  /                                     the page (files in smscool/page/)

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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from smscool.decision_view import DAY_MS, HOUR_MS, DecisionCounts, DecisionReader
from streams import topics
from streams.automations import (
    Automation,
    Catalog,
    CatalogFollower,
    InvalidField,
    publish_automation,
)
from streams.kafka import ensure_topics
from streams.numbers import InvalidNumber, to_e164
from streams.settings import Settings
from streams.validation import (
    EDITABLE,
    FieldError,
    attributes_of,
    build_automation,
    sms_length,
)
from streams.window import DAY_NAMES

# The page: static files, no build step, nothing fetched from elsewhere.
PAGE = Path(__file__).with_name("page")
PAGE_FILES = {"index.html": "text/html", "page.js": "text/javascript",
              "page.css": "text/css"}

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def message_facts(message: str) -> dict[str, Any]:
    """The attributes a message uses and its length in SMS parts as written."""
    length = sms_length(message)
    return {"attributes": attributes_of(message),
            "message_length": {"encoding": length.encoding, "units": length.units,
                               "parts": length.parts}}


def automation_json(automation: Automation) -> dict[str, Any]:
    """An automation as the API shows it: its fields, its message's facts, the time zone
    its window keeps and the window's days and hours (null: always open)."""
    window = automation.sending_window()
    hours = None
    if automation.window != "always":
        hours = {"days": [DAY_NAMES[d] for d in sorted(window.days)],
                 "start": _clock(window.start_minute), "end": _clock(window.end_minute)}
    return {**automation.to_record(), **message_facts(automation.message),
            "zone": automation.zone, "sending_hours": hours}


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _error(status: int, field: str | None, error: str) -> web.Response:
    return web.json_response({"field": field, "error": error}, status=status)


def _errors(errors: list[FieldError]) -> web.Response:
    first = errors[0]
    return web.json_response({"field": first.field, "error": first.error,
                              "errors": [{"field": e.field, "error": e.error}
                                         for e in errors]}, status=400)


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
        app.router.add_get("/automations/{automation_id}/why", self._why)
        app.router.add_post("/check", self._check)
        app.router.add_get("/", self._page)
        app.router.add_get("/page/{name}", self._page)
        return app

    # -- authentication and errors ----------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The page's files hold no data: the page asks for the token itself.
        open_path = request.path in ("/healthz", "/readyz", "/") or (
            request.path.startswith("/page/"))
        if not open_path and not self._allowed(request):
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
        counts = await self._decision_counts()
        now = self.settings.clock.now_ms()  # the workers' clock, as decisions are dated
        return web.json_response({
            "automation_id": automation.automation_id,
            "last_hour": counts.since(automation.automation_id, now - HOUR_MS),
            "last_day": counts.since(automation.automation_id, now - DAY_MS)})

    async def _why(self, request: web.Request) -> web.Response:
        """The number's latest decisions for this automation, with their causes. The
        number is normalized with the automation's country and shown back as its tag;
        as written (E.164) only to the caller who sent it, which is every caller here."""
        automation = self._find(request)
        number = request.query.get("number", "")
        try:
            e164 = to_e164(number, automation.country)
        except InvalidNumber as exc:
            return _error(400, "number", str(exc))
        counts = await self._decision_counts()
        return web.json_response({
            "automation_id": automation.automation_id, "e164": e164,
            "tag": self.settings.number_tag(e164),
            "decisions": [_why_json(d) for d in
                          counts.latest(e164, automation.automation_id)]})

    async def _check(self, request: web.Request) -> web.Response:
        """What the page shows while an automation is written, before it is saved: the
        message's facts, the time zone its window keeps, and what is wrong with the
        fields given (as a save would say it)."""
        body = await self._body(request)
        given = {name: value for name, value in body.items() if name in EDITABLE}
        draft = {"title": "-", "country": "DK", "message": "-", "sender": "draft", **given}
        _, errors = build_automation("draft", draft, None, 0)
        zone = None
        try:
            zone = Automation.from_record({**Automation("draft", "-", "DK", "-", "-")
                                           .to_record(), **given}).zone
        except (InvalidField, TypeError):
            pass
        return web.json_response({
            **message_facts(str(given.get("message") or "")), "zone": zone,
            "errors": [{"field": e.field, "error": e.error} for e in errors
                       if e.field in given]})

    async def _page(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "index.html")
        if name not in PAGE_FILES:
            raise web.HTTPNotFound(reason=f"no page file {name}")
        return web.Response(body=(PAGE / name).read_bytes(), content_type=PAGE_FILES[name],
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

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

    async def _decision_counts(self) -> DecisionCounts:
        """What sms.decisions says now (read in a thread: it may wait on Kafka)."""
        if self.decisions is None:
            raise web.HTTPServiceUnavailable(reason="decisions are not served here")
        return await asyncio.get_running_loop().run_in_executor(None, self.decisions)

    async def _write(self, automation: Automation) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.publish, automation)
        self.catalog.put(automation)  # read back at once; the follower agrees later


def _why_json(decision: dict[str, Any]) -> dict[str, Any]:
    cause = None
    if decision["cause_at_ms"] is not None:
        cause = {"at_ms": decision["cause_at_ms"], "origin": decision["cause_origin"],
                 "ref": decision["cause_ref"]}
    return {"decision_id": decision["decision_id"], "event_id": decision["event_id"],
            "outcome": decision["outcome"], "detail": decision["detail"],
            "decided_at_ms": decision["decided_at_ms"], "cause": cause,
            "release_at_ms": decision["release_at_ms"]}


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
    reader = DecisionReader(bootstrap, settings.clock.now_ms)
    api = AutomationsApi(settings, catalog, follower,
                         lambda a: publish_automation(bootstrap, a), cancel_held,
                         reader.current)
    runner = web.AppRunner(api.app(), access_log=None)  # a log line could carry a token
    await runner.setup()
    await web.TCPSite(runner, settings.web_host, settings.web_port).start()
    host, port = runner.addresses[0][:2]
    print(f"REST API listening: http://{host}:{port}", flush=True)
    print(f"SMS automations page: http://{host}:{port}/", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, follower.load)
        api.ready = True
        await stop.wait()
    finally:
        await runner.cleanup()
        follower.close()
        reader.close()
