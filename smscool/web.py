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
from typing import Any

from aiohttp import web

from streams.automations import Automation, Catalog, CatalogFollower, publish_automation
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


class AutomationsApi:
    """The routes, over a catalog kept in step by `follower` (polled before each read)
    and a `publish` that writes a definition and returns once Kafka has it."""

    def __init__(self, settings: Settings, catalog: Catalog, follower: Any,
                 publish: Callable[[Automation], None],
                 cancel_held: Callable[[str], None]) -> None:
        self.settings = settings
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

    api = AutomationsApi(settings, catalog, follower,
                         lambda a: publish_automation(bootstrap, a), cancel_held)
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
