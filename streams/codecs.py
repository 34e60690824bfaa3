"""Codecs: every record to bytes and back, with one clear error when that fails.

Records are Avro (schemaless binary, the schema from `schemas/`). Producers may write
triggers and outside sends as JSON objects instead; those are validated against the
same schema. The two are told apart by the first byte: a JSON object starts with `{`,
which can never start an Avro record of these schemas (it would be a negative length).
"""

from __future__ import annotations

import io
import json
import re
from functools import cache
from typing import Any, cast

import fastavro
import fastavro.schema
import fastavro.validation

from schemas import SCHEMA_DIR

_FIELD_IN_MESSAGE = re.compile(r"on field (\w+)")


class CodecError(ValueError):
    """A record that cannot be encoded or decoded; `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _without_logical_types(node: Any) -> Any:
    # Times are epoch milliseconds everywhere in this project; fastavro would turn
    # timestamp-millis into datetimes. The annotation stays in the .avsc files for
    # other readers of the topics.
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@cache
def schema(full_name: str, file_name: str | None = None) -> Any:
    """The parsed schema of `full_name` (from `file_name` under schemas/, if given); a
    record that names another record (a bundle of number events) has that one's file
    parsed first."""
    path = SCHEMA_DIR / (file_name or f"{full_name}.avsc")
    with path.open() as f:
        body = _without_logical_types(json.load(f))
    named: dict[str, Any] = {}
    while True:
        try:
            return fastavro.parse_schema(body, named_schemas=dict(named))
        except fastavro.schema.UnknownType as exc:
            if exc.name in named:
                raise
            named[exc.name] = schema(exc.name)


class AvroCodec:
    """`earlier`: files under schemas/ of the schema's earlier versions, each adding
    fields at the end. A record that the current schema cannot read is read as each of
    them in turn, newest first, the added fields taking their defaults: records written
    before an upgrade (a compacted topic keeps them) stay readable."""

    def __init__(self, full_name: str, earlier: tuple[str, ...] = ()) -> None:
        self.full_name = full_name
        self.schema = schema(full_name)
        self._earlier = [schema(full_name, name) for name in earlier]
        self._defaults = {
            f["name"]: f["default"] for f in self.schema["fields"] if "default" in f
        }
        self._field_names = [f["name"] for f in self.schema["fields"]]

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            # fastavro's message may quote the value (a phone number): name the field only.
            field = _FIELD_IN_MESSAGE.search(str(exc))
            where = f" on field {field.group(1)}" if field else ""
            raise CodecError(
                "unencodable", f"cannot encode {self.full_name}: {type(exc).__name__}{where}"
            ) from None
        return out.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise CodecError("tombstone", f"a null value where a {self.full_name} was expected")
        if data[:1] == b"{":
            return self.decode_json(data)
        if data.lstrip()[:1] == b"{":
            # JSON after white space, or Avro whose first length byte happens to be a
            # space or a tab: try both, and report the JSON error if neither reads it.
            try:
                return self.decode_json(data)
            except CodecError as json_error:
                try:
                    return self.decode_avro(data)
                except CodecError:
                    raise json_error from None
        return self.decode_avro(data)

    def decode_avro(self, data: bytes) -> dict[str, Any]:
        try:
            return self._decode_avro(data, self.schema)
        except CodecError:
            for writer in self._earlier:
                try:
                    return self._decode_avro(data, writer)
                except CodecError:
                    continue
            raise

    def _decode_avro(self, data: bytes, writer: Any) -> dict[str, Any]:
        buffer = io.BytesIO(data)
        try:
            record = fastavro.schemaless_reader(
                buffer, writer, None if writer is self.schema else self.schema)
        except Exception as exc:  # fastavro raises many kinds on garbage; all mean the same
            raise CodecError(
                "undecodable", f"not a valid Avro {self.full_name}: {type(exc).__name__}"
            ) from None
        if buffer.tell() != len(data):
            raise CodecError(
                "undecodable",
                f"not a valid Avro {self.full_name}: "
                f"{len(data) - buffer.tell()} bytes left after the record",
            )
        # Every schema here is an Avro record, which fastavro reads as a dict.
        return cast("dict[str, Any]", record)

    def decode_json(self, data: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CodecError("undecodable", f"not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise CodecError("invalid_record", f"a JSON {self.full_name} must be an object")
        unknown = sorted(set(parsed) - set(self._field_names))
        if unknown:
            raise CodecError(
                "invalid_record", f"unknown field(s) for {self.full_name}: {', '.join(unknown)}"
            )
        missing = [n for n in self._field_names if n not in parsed and n not in self._defaults]
        if missing:
            raise CodecError(
                "invalid_record", f"missing field(s) for {self.full_name}: {', '.join(missing)}"
            )
        record = {**self._defaults, **parsed}
        try:
            fastavro.validation.validate(record, self.schema, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            # Name the fields, never the values: a value may be a phone number.
            fields = ", ".join(sorted({str(e.field).rsplit(".", 1)[-1] for e in exc.errors or ()}))
            raise CodecError(
                "invalid_record",
                f"JSON does not fit {self.full_name}: wrong type for {fields or 'a field'}",
            ) from None
        return record


AUTOMATION = AvroCodec("sms_cooldown.Automation",
                       earlier=("earlier/sms_cooldown.Automation.2.avsc",
                                "earlier/sms_cooldown.Automation.1.avsc"))
TRIGGER = AvroCodec("sms_cooldown.Trigger")
SENT = AvroCodec("sms_cooldown.Sent")
NUMBER_EVENT = AvroCodec("sms_cooldown.NumberEvent")
NUMBER_EVENT_BUNDLE = AvroCodec("sms_cooldown.NumberEventBundle")
SEND_REQUEST = AvroCodec("sms_cooldown.SendRequest")
DECISION = AvroCodec("sms_cooldown.Decision")
DEAD_LETTER = AvroCodec("sms_cooldown.DeadLetter")
DELIVERY_OUTCOME = AvroCodec("sms_cooldown.DeliveryOutcome")
HELD = AvroCodec("sms_cooldown.Held")
OPT_OUT = AvroCodec("sms_cooldown.OptOut")
ERASURE = AvroCodec("sms_cooldown.Erasure")

CODECS = {c.full_name: c for c in (
    AUTOMATION, TRIGGER, SENT, NUMBER_EVENT, NUMBER_EVENT_BUNDLE, SEND_REQUEST, DECISION,
    DEAD_LETTER, DELIVERY_OUTCOME, HELD, OPT_OUT, ERASURE,
)}
