"""Prometheus metrics of the worker (with its ingest child) and of the connector, served
on `/metrics` beside `/healthz` and `/readyz`.

Each process role has a registry of its own, so that a process shows only what it
measures. The worker's ingest runs as a child process: it serves its registry on an
abstract Unix socket named after the worker's pid (nothing on disk, nothing on the
network), and the worker's `/metrics` adds those families to its own.

Where: `SMSCOOL_METRICS_HOST` (loopback unless told otherwise) and `SMSCOOL_METRICS_PORT`
(the worker's default 9108, the connector's 9109; 0: a free port; `off`: none).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

WORKER_PORT = 9108
CONNECTOR_PORT = 9109
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

WORKER = CollectorRegistry()
INGEST = CollectorRegistry()
CONNECTOR = CollectorRegistry()
ProcessCollector(registry=WORKER)
ProcessCollector(registry=CONNECTOR)

# Decisions: the cooldown agent's in the worker, the ones that need no state in ingest
# (the same family; their outcomes never overlap).
_DECISIONS_HELP = "Decisions written to sms.decisions, by automation and outcome"
AGENT_DECISIONS = Counter("smscool_decisions", _DECISIONS_HELP, ["automation", "outcome"],
                          registry=WORKER)
INGEST_DECISIONS = Counter("smscool_decisions", _DECISIONS_HELP, ["automation", "outcome"],
                           registry=INGEST)
TRIGGERS_READ = Counter("smscool_triggers_read",
                        "Input records read by ingest (triggers, outside sends, delivery "
                        "outcomes, opt-outs, erasures), by topic", ["topic"], registry=INGEST)
LAG_HELP = "Records of a partition not yet read by its consumer group, by partition"
INGEST_LAG = Gauge("smscool_consumer_lag", LAG_HELP, ["group", "topic", "partition"],
                   registry=INGEST)
CONNECTOR_LAG = Gauge("smscool_consumer_lag", LAG_HELP, ["group", "topic", "partition"],
                      registry=CONNECTOR)

GATEWAY_REQUESTS = Counter("smscool_gateway_requests",
                           "HTTP requests to the SMS gateway, by result (accepted, rejected, "
                           "rate_limited, retryable, unreachable, ambiguous)", ["result"],
                           registry=CONNECTOR)
GATEWAY_RETRIES = Counter("smscool_gateway_retries",
                          "Gateway requests that were a second or later attempt",
                          registry=CONNECTOR)
GATEWAY_LATENCY = Histogram("smscool_gateway_latency_seconds",
                            "Time from a gateway request to its answer (or timeout)",
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                            registry=CONNECTOR)
RATE_LIMIT_WAITS = Counter("smscool_rate_limit_waits",
                           "Requests held back by the connector's own rate limit",
                           registry=CONNECTOR)
RATE_LIMIT_WAIT_SECONDS = Counter("smscool_rate_limit_wait_seconds",
                                  "Time requests waited for the connector's rate limit",
                                  registry=CONNECTOR)


def counting(counter: Counter) -> Callable[..., None]:
    """`count(*label_values, amount=1)`: `counter`'s child for those labels, looked up
    once (a decision is counted on the hot path)."""
    children: dict[tuple[str, ...], Any] = {}

    def count(*labels: str, amount: float = 1) -> None:
        child = children.get(labels)
        if child is None:
            child = children[labels] = counter.labels(*labels)
        child.inc(amount)

    return count


count_agent_decision = counting(AGENT_DECISIONS)
count_ingest_decision = counting(INGEST_DECISIONS)
count_read = counting(TRIGGERS_READ)


# Set by the worker for its ingest child: where that serves its metrics.
INGEST_SOCKET_ENV = "SMSCOOL_INGEST_METRICS_SOCKET"


def ingest_socket(worker_pid: int) -> str:
    """The name of the abstract Unix socket (Linux) the ingest child of worker
    `worker_pid` serves its metrics on."""
    return f"smscool-ingest-metrics-{worker_pid}"


def merged(families: Iterable[Iterable[Metric]]) -> list[Metric]:
    """Families of several registries as one, samples of a same-named family together."""
    by_name: dict[str, Metric] = {}
    for group in families:
        for family in group:
            if family.name in by_name:
                by_name[family.name].samples.extend(family.samples)
            else:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = list(family.samples)
                by_name[family.name] = copy
    return list(by_name.values())


class _Families:
    """A collector of given families, for `generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def exposition(registry: CollectorRegistry, extra_text: str = "") -> bytes:
    """`registry` in Prometheus's text format, with the families of `extra_text` (the
    same format) merged in."""
    if not extra_text:
        return generate_latest(registry)
    families = merged([registry.collect(), text_string_to_metric_families(extra_text)])
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Families(families))  # type: ignore[arg-type]
    return generate_latest(combined)


Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def metrics_app(registry: CollectorRegistry, ready: Readiness | None = None,
                extra: Callable[[], Awaitable[str]] | None = None,
                before_scrape: Callable[[], Awaitable[None]] | None = None
                ) -> web.Application:
    """`/metrics` (with `extra()`'s text merged in, after `before_scrape()` brought the
    gauges up to date), `/healthz` and `/readyz` (`ready()`: whether, and what is known)."""

    async def metrics(_: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        text = await extra() if extra is not None else ""
        return web.Response(body=exposition(registry, text),
                            headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def readyz(_: web.Request) -> web.Response:
        if ready is None:
            return web.json_response({"status": "ready"})
        is_ready, facts = ready()
        return web.json_response({"status": "ready" if is_ready else "not ready", **facts},
                                 status=200 if is_ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, host: str, port: int, what: str) -> web.AppRunner | None:
    """Serve `app` on host:port; None (and the log says why) when the port is taken:
    a process runs on without its metrics rather than not at all."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d (%s); SMSCOOL_METRICS_PORT picks "
                  "another port", what, host, port, exc)
        await runner.cleanup()
        return None
    bound_host, bound_port = runner.addresses[0][:2]
    log.info("%s metrics listening: http://%s:%d/metrics", what, bound_host, bound_port)
    return runner


async def serve_unix(app: web.Application, name: str) -> web.AppRunner:
    """Serve `app` on the abstract Unix socket `name` (no file; gone with the process)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, "\0" + name).start()
    return runner


async def fetch_unix(name: str, timeout_s: float = 2.0) -> str:
    """The metrics text served on the abstract Unix socket `name`; empty if none answers."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path="\0" + name),
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)
                                         ) as session:
            async with session.get("http://ingest/metrics") as answer:
                return await answer.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return ""
