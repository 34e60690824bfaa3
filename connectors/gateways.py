"""SMS gateway adapters: one `send` per SMS, and one classification of its outcome.

This module owns the `Gateway` interface the connector calls, the two adapters
(GatewayAPI's REST API and a generic JSON webhook), the single function that turns an
HTTP answer or a transport error into a `GatewayResult`, and the gateway configuration
read from the environment. It knows nothing of Kafka.

What a result kind tells the connector:

    accepted      2xx: the gateway took the SMS
    rate_limited  429: slow down, then send again (retry_after_s when the gateway said)
    retryable     5xx or 408: the gateway failed; sending again is expected to be safe
    rejected      other 4xx and 3xx: permanent (bad number, bad sender, bad credentials)
    unreachable   no connection was made, so the request never left: safe to send again
    ambiguous     the request was sent but no answer came: the SMS may have gone out
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

ACCEPTED = "accepted"
RATE_LIMITED = "rate_limited"
RETRYABLE = "retryable"
REJECTED = "rejected"
UNREACHABLE = "unreachable"
AMBIGUOUS = "ambiguous"

DETAIL_MAX = 500
DEFAULT_GATEWAYAPI_URL = "https://gatewayapi.com"
DEFAULT_WEBHOOK_BODY = (
    '{"to": "{e164}", "from": "{sender}", "text": "{text}", "reference": "{decision_id}"}'
)
GATEWAYS = ("gatewayapi", "webhook")

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PLACEHOLDER = re.compile(r"\{(decision_id|e164|msisdn|text|sender)\}")


@dataclass(frozen=True)
class OutgoingSms:
    decision_id: str  # travels as the gateway's client reference (GatewayAPI "userref")
    e164: str  # "+4520123456"
    text: str
    sender: str

    @property
    def msisdn(self) -> str:
        """The E.164 number without its plus: the form GatewayAPI wants."""
        return self.e164[1:]


@dataclass(frozen=True)
class GatewayResult:
    kind: str
    status: int | None = None
    message_id: str | None = None
    retry_after_s: float | None = None
    # The gateway's answer (at most DETAIL_MAX chars) or the transport error's type; the
    # recipient's number is scrubbed out, since results end up in logs and topics.
    detail: str = ""


class Gateway(Protocol):
    name: str

    async def send(
        self, session: aiohttp.ClientSession, sms: OutgoingSms, timeout_s: float
    ) -> GatewayResult: ...


# --- classification, shared by every adapter ------------------------------------------


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date.

    None when the header is missing or unreadable; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are always UTC
        when = when.replace(tzinfo=UTC)
    now_s = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now_s)


def scrub(text: str, sms: OutgoingSms) -> str:
    """`text` with the recipient's number taken out, also when written with separators
    ("+45 20 12 34 56") or with a 00 prefix."""
    digits = sms.e164.lstrip("+")
    if not digits.isdigit():
        return text
    pattern = r"(?:\+|00)?" + r"[\s\-.()/]*".join(digits)
    return re.sub(pattern, "<number>", text)


def classify(
    status: int, headers: Mapping[str, str], body: str, sms: OutgoingSms,
    message_id: str | None = None,
) -> GatewayResult:
    """The result for an HTTP answer."""
    detail = scrub(body, sms)[:DETAIL_MAX]
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if 200 <= status < 300:
        return GatewayResult(ACCEPTED, status, message_id, detail=detail)
    if status == 429:
        return GatewayResult(RATE_LIMITED, status, retry_after_s=retry_after, detail=detail)
    if status >= 500 or status == 408:
        return GatewayResult(RETRYABLE, status, retry_after_s=retry_after, detail=detail)
    return GatewayResult(REJECTED, status, detail=detail)


def classify_error(exc: BaseException) -> GatewayResult:
    """The result for a transport error: only a failed connect proves nothing was sent."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = getattr(exc.os_error, "strerror", None)
        detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        return GatewayResult(UNREACHABLE, detail=detail)
    return GatewayResult(AMBIGUOUS, detail=type(exc).__name__)


async def post_json(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], body: Any,
    sms: OutgoingSms, timeout_s: float,
    message_id_of: Callable[[Any], str | None],
) -> GatewayResult:
    """POST `body` as JSON and classify what happens; never raises for HTTP or network
    trouble. `message_id_of` picks the gateway's id out of a 2xx answer's JSON."""
    # ASCII-only JSON (non-ASCII as \u escapes): valid for every JSON parser, and no
    # character of the text can fail to encode.
    data = json.dumps(body).encode("ascii")
    request_headers = CIMultiDict(headers)
    request_headers.setdefault("Content-Type", "application/json")
    try:
        # No redirects: following a 301/302 would turn the POST into a GET, and a 200 from
        # some web page would then read as an accepted SMS.
        async with session.post(
            url, data=data, headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False,
        ) as response:
            raw = await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return classify_error(exc)
    text = raw.decode("utf-8", "replace")
    message_id = None
    if 200 <= response.status < 300:
        try:
            message_id = message_id_of(json.loads(text))
        except (ValueError, LookupError, TypeError):
            message_id = None  # accepted all the same: the status says so
    return classify(response.status, response.headers, text, sms, message_id)


def _http_url(url: str, what: str) -> str:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ValueError(f"{what} is not a readable URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what} must be an http(s) URL, got {_safe_url(url)!r}")
    return url


def _safe_url(url: str) -> str:
    """A URL fit for logs: no user info, no query (either may carry a credential)."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unreadable URL>"


def _not_e164(sms: OutgoingSms) -> GatewayResult | None:
    # The outbox only holds normalized numbers, so this is a bug upstream; answering
    # REJECTED keeps the connector running instead of sending to a garbled number.
    if _E164.fullmatch(sms.e164):
        return None
    return GatewayResult(REJECTED, detail="not an E.164 number; nothing was sent")


# --- adapters ---------------------------------------------------------------------------


class GatewayApi:
    """GatewayAPI's REST API (`POST /rest/mtsms`), one recipient per request."""

    name = "gatewayapi"

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = _http_url(base_url, "the GatewayAPI URL").rstrip("/")
        self._token = token

    def __repr__(self) -> str:
        return f"GatewayApi(base_url={_safe_url(self.base_url)!r})"

    async def send(
        self, session: aiohttp.ClientSession, sms: OutgoingSms, timeout_s: float
    ) -> GatewayResult:
        invalid = _not_e164(sms)
        if invalid:
            return invalid
        body = {
            "sender": sms.sender,
            "message": sms.text,
            "recipients": [{"msisdn": int(sms.msisdn)}],
            "userref": sms.decision_id,
        }
        return await post_json(
            session, f"{self.base_url}/rest/mtsms", {"Authorization": f"Token {self._token}"},
            body, sms, timeout_s, _gatewayapi_id,
        )


def _gatewayapi_id(answer: Any) -> str | None:
    ids = answer.get("ids") if isinstance(answer, dict) else None
    return str(ids[0]) if isinstance(ids, list) and ids else None


class Webhook:
    """A generic JSON webhook: the body is a JSON template whose string values may hold
    the placeholders {decision_id}, {e164}, {msisdn}, {text} and {sender}."""

    name = "webhook"

    def __init__(
        self, url: str, headers: dict[str, str], body_template: str,
        id_field: str | None = "id",
    ) -> None:
        self.url = _http_url(url, "the webhook URL")
        self._headers = dict(headers)
        try:
            self.template = json.loads(body_template)
        except ValueError as exc:
            raise ValueError(f"the webhook body template is not valid JSON: {exc}") from None
        placeholders = set(_placeholders(self.template))
        if not placeholders & {"e164", "msisdn"}:
            raise ValueError("the webhook body template has no {e164} or {msisdn}: "
                             "the gateway would not learn the recipient")
        self.id_field = id_field or None

    def __repr__(self) -> str:
        return (f"Webhook(url={_safe_url(self.url)!r}, headers={sorted(self._headers)!r}, "
                f"id_field={self.id_field!r})")

    def body(self, sms: OutgoingSms) -> Any:
        """The template with the SMS's values put into its string leaves."""
        values = {"decision_id": sms.decision_id, "e164": sms.e164, "msisdn": sms.msisdn,
                  "text": sms.text, "sender": sms.sender}
        return _fill(self.template, values)

    async def send(
        self, session: aiohttp.ClientSession, sms: OutgoingSms, timeout_s: float
    ) -> GatewayResult:
        invalid = _not_e164(sms)
        if invalid:
            return invalid
        return await post_json(session, self.url, self._headers, self.body(sms), sms,
                               timeout_s, self._message_id)

    def _message_id(self, answer: Any) -> str | None:
        if self.id_field is None or not isinstance(answer, dict):
            return None
        value = answer.get(self.id_field)
        return None if value is None else str(value)


def _placeholders(node: Any) -> list[str]:
    if isinstance(node, str):
        return _PLACEHOLDER.findall(node)
    if isinstance(node, dict):
        return [name for value in node.values() for name in _placeholders(value)]
    if isinstance(node, list):
        return [name for value in node for name in _placeholders(value)]
    return []


def _fill(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        if node == "{msisdn}":
            return int(values["msisdn"])
        # One pass, so a placeholder written inside the SMS text stays literal text.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, values) for value in node]
    return node


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayConfig:
    gateway: str = "gatewayapi"
    gatewayapi_url: str = DEFAULT_GATEWAYAPI_URL
    gatewayapi_token: str = field(default="", repr=False)
    webhook_url: str = ""
    webhook_headers: dict[str, str] = field(default_factory=dict, repr=False)
    webhook_body: str = DEFAULT_WEBHOOK_BODY
    webhook_id_field: str | None = "id"

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, gateway: str | None = None
    ) -> GatewayConfig:
        """Read SMSCOOL_GATEWAY*/SMSCOOL_WEBHOOK_*; `gateway` (the --gateway flag) wins
        over SMSCOOL_GATEWAY."""
        env = dict(os.environ if env is None else env)
        name = (gateway or env.get("SMSCOOL_GATEWAY") or "gatewayapi").strip().lower()
        if name not in GATEWAYS:
            raise ValueError(f"SMSCOOL_GATEWAY must be one of {', '.join(GATEWAYS)}, "
                             f"got {name!r}")
        id_field = env.get("SMSCOOL_WEBHOOK_ID_FIELD", "id").strip()
        return cls(
            gateway=name,
            gatewayapi_url=env.get("SMSCOOL_GATEWAYAPI_URL", "").strip()
            or DEFAULT_GATEWAYAPI_URL,
            gatewayapi_token=env.get("SMSCOOL_GATEWAYAPI_TOKEN", "").strip(),
            webhook_url=env.get("SMSCOOL_WEBHOOK_URL", "").strip(),
            webhook_headers=_headers(env.get("SMSCOOL_WEBHOOK_HEADERS", "")),
            webhook_body=env.get("SMSCOOL_WEBHOOK_BODY", "").strip() or DEFAULT_WEBHOOK_BODY,
            # An empty SMSCOOL_WEBHOOK_ID_FIELD means the webhook answers with no id.
            webhook_id_field=id_field or None,
        )


def _headers(raw: str) -> dict[str, str]:
    if not raw.strip():
        return {}
    # The value holds credentials: the errors never quote it.
    try:
        headers = json.loads(raw)
    except ValueError:
        raise ValueError("SMSCOOL_WEBHOOK_HEADERS is not valid JSON "
                         "(expected an object of header names to strings)") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("SMSCOOL_WEBHOOK_HEADERS must be a JSON object of header names "
                         "to strings")
    return headers


def build_gateway(config: GatewayConfig) -> Gateway:
    """The adapter `config` names; ValueError saying what is missing or wrong."""
    if config.gateway == "gatewayapi":
        if not config.gatewayapi_token:
            raise ValueError("SMSCOOL_GATEWAYAPI_TOKEN is not set")
        try:
            return GatewayApi(config.gatewayapi_url, config.gatewayapi_token)
        except ValueError as exc:
            raise ValueError(f"SMSCOOL_GATEWAYAPI_URL: {exc}") from None
    if config.gateway == "webhook":
        if not config.webhook_url:
            raise ValueError("SMSCOOL_WEBHOOK_URL is not set")
        try:
            _http_url(config.webhook_url, "the webhook URL")
        except ValueError as exc:
            raise ValueError(f"SMSCOOL_WEBHOOK_URL: {exc}") from None
        try:
            return Webhook(config.webhook_url, config.webhook_headers, config.webhook_body,
                           config.webhook_id_field)
        except ValueError as exc:
            raise ValueError(f"SMSCOOL_WEBHOOK_BODY: {exc}") from None
    raise ValueError(f"unknown gateway {config.gateway!r}; expected one of "
                     f"{', '.join(GATEWAYS)}")
