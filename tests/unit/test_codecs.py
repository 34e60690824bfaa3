"""Codecs: every record round-trips; Avro and JSON are told apart; bad bytes give one clear
CodecError with a reason code, and no error message repeats a phone number."""

import json

import pytest

from streams import codecs

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PHONE = "+4520123456"

# One record per schema with every field set to a non-default value.
FULL = {
    "sms_cooldown.Automation": {
        "automation_id": "welcome", "title": "Welcome text", "enabled": False,
        "event_type": "signup", "segment": "vip", "country": "DK",
        "timezone": "Europe/Copenhagen", "window": "mon-fri 09:00-20:00",
        "message": "Hi {name}", "sender": "ACME", "cooldown_enabled": True,
        "cooldown_ms": 86_400_000, "failed_sends_count": True, "updated_at_ms": T0,
        "outside_window": "drop", "on_cooldown": "defer", "max_hold_ms": 6 * 3_600_000,
        "priority": 5, "transactional": True,
    },
    "sms_cooldown.Trigger": {
        "event_id": "evt-1", "automation_id": "welcome", "event_type": "signup",
        "segment": "vip", "phone": "+45 20 12 34 56", "occurred_at_ms": T0,
        "attributes": {"name": "Bo", "city": "Aarhus"},
    },
    "sms_cooldown.Sent": {
        "phone": "20123456", "country": "DK", "sent_at_ms": T0, "origin": "crm",
        "decision_id": "d-1", "message_id": "m-1",
    },
    "sms_cooldown.NumberEvent": {
        "kind": "sent", "e164": PHONE, "at_ms": T0, "event_id": "evt-1", "decision_id": "d-1",
        "automation_id": "welcome", "enabled": False, "cooldown_enabled": True,
        "cooldown_ms": 3_600_000, "window": "daily 08:00-21:00", "timezone": "Europe/Copenhagen",
        "text": "Hi Bo", "sender": "ACME", "origin": "crm", "ref": "m-1",
        "source_topic": "sms.sent", "source_partition": 3, "source_offset": 42,
        "hold_outside_window": False, "defer_on_cooldown": True, "max_hold_ms": 60_000,
        "priority": -2, "transactional": True, "failures_to_opt_out": 3,
    },
    "sms_cooldown.NumberEventBundle": {"events": [{
        "kind": "trigger", "e164": PHONE, "at_ms": T0, "event_id": "evt-1",
        "decision_id": "d-1", "automation_id": "welcome", "enabled": True,
        "cooldown_enabled": True, "cooldown_ms": 3_600_000, "window": "always",
        "timezone": "UTC", "text": "Hi Bo", "sender": "ACME", "origin": None, "ref": None,
        "source_topic": "sms.triggers", "source_partition": 0, "source_offset": 1,
        "hold_outside_window": True, "defer_on_cooldown": False, "max_hold_ms": 1,
        "priority": 0, "transactional": False, "failures_to_opt_out": 0,
    }]},
    "sms_cooldown.SendRequest": {
        "decision_id": "d-1", "event_id": "evt-1", "automation_id": "welcome", "e164": PHONE,
        "text": "Hi Bo", "sender": "ACME", "decided_at_ms": T0,
    },
    "sms_cooldown.Decision": {
        "decision_id": "d-2", "event_id": "evt-2", "automation_id": "welcome", "e164": PHONE,
        "outcome": "suppressed_cooldown", "detail": "the number got an SMS",
        "decided_at_ms": T0 + 1, "cause_at_ms": T0, "cause_origin": "crm", "cause_ref": "m-1",
        "source_topic": "sms.triggers", "source_partition": 1, "source_offset": 7,
        "release_at_ms": T0 + 3_600_000,
    },
    "sms_cooldown.Held": {
        "decision_id": "d-3", "event_id": "evt-3", "automation_id": "welcome", "e164": PHONE,
        "outcome": "deferred_cooldown", "trigger_at_ms": T0, "release_at_ms": T0 + 60_000,
        "deadline_ms": T0 + 120_000, "priority": 1,
    },
    "sms_cooldown.DeadLetter": {
        "reason": "undecodable", "detail": "not a valid Avro", "source_topic": "sms.triggers",
        "source_partition": 2, "source_offset": 9, "key": b"k\x00", "value": b"\xff\xfe",
        "failed_at_ms": T0,
    },
    "sms_cooldown.DeliveryOutcome": {
        "decision_id": "d" * 32, "event_id": "evt-1", "automation_id": "welcome",
        "e164": PHONE, "outcome": "failed", "ambiguous": True, "attempts": 3,
        "gateway": "gatewayapi", "message_id": "421", "status": 400,
        "detail": '{"code": "0x0216"}', "at_ms": T0,
    },
    "sms_cooldown.Erasure": {
        "phone": "20123456", "country": "DK", "requested_at_ms": T0, "requested_by": "cli",
    },
    "sms_cooldown.OptOut": {
        "phone": "20123456", "country": "DK", "opted_out": True, "at_ms": T0,
        "channel": "sms_reply", "scope": "newsletter",
    },
}

TRIGGER_JSON = {"event_id": "evt-1", "phone": PHONE, "occurred_at_ms": T0}


def test_every_codec_has_a_full_record():
    assert set(FULL) == set(codecs.CODECS)


@pytest.mark.parametrize("name", sorted(FULL))
def test_round_trip(name):
    codec = codecs.CODECS[name]
    data = codec.encode(FULL[name])
    assert data[:1] != b"{"
    assert codec.decode(data) == FULL[name]


@pytest.mark.parametrize("name", ["sms_cooldown.Trigger", "sms_cooldown.Sent"])
def test_json_round_trip(name):
    data = json.dumps(FULL[name]).encode()
    assert codecs.CODECS[name].decode(data) == FULL[name]


def test_json_fills_defaults():
    assert codecs.TRIGGER.decode(json.dumps(TRIGGER_JSON).encode()) == {
        **TRIGGER_JSON, "automation_id": None, "event_type": None, "segment": None,
        "attributes": {},
    }


def test_json_is_detected_after_leading_whitespace():
    data = b" \n\t" + json.dumps(FULL["sms_cooldown.Trigger"]).encode()
    assert codecs.TRIGGER.decode(data) == FULL["sms_cooldown.Trigger"]


def test_avro_is_not_read_as_json():
    data = codecs.TRIGGER.encode(FULL["sms_cooldown.Trigger"])
    with pytest.raises(codecs.CodecError) as err:
        codecs.TRIGGER.decode_json(data)
    assert err.value.reason == "undecodable"


def test_avro_whose_length_byte_is_whitespace_is_still_avro():
    record = {**FULL["sms_cooldown.Trigger"], "event_id": "{evt-0123456789}"}
    data = codecs.TRIGGER.encode(record)
    assert data[:2] == b" {"
    assert codecs.TRIGGER.decode(data) == record


@pytest.mark.parametrize(
    ("patch", "reason", "message"),
    [
        ({"phone": None}, "invalid_record", "missing field(s) for sms_cooldown.Trigger: phone"),
        ({"occurred_at_ms": "soon"}, "invalid_record",
         "JSON does not fit sms_cooldown.Trigger: wrong type for occurred_at_ms"),
        ({"occurred_at_ms": True}, "invalid_record",
         "JSON does not fit sms_cooldown.Trigger: wrong type for occurred_at_ms"),
        ({"attributes": {"name": 5}}, "invalid_record",
         "JSON does not fit sms_cooldown.Trigger: wrong type for attributes"),
        ({"colour": "red", "size": 3}, "invalid_record",
         "unknown field(s) for sms_cooldown.Trigger: colour, size"),
    ],
)
def test_bad_json_fields(patch, reason, message):
    body = {k: v for k, v in {**TRIGGER_JSON, **patch}.items() if v is not None}
    with pytest.raises(codecs.CodecError) as err:
        codecs.TRIGGER.decode(json.dumps(body).encode())
    assert (err.value.reason, str(err.value)) == (reason, message)


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object(data):
    with pytest.raises(codecs.CodecError) as err:
        codecs.TRIGGER.decode_json(data)
    assert err.value.reason == "invalid_record"
    assert str(err.value) == "a JSON sms_cooldown.Trigger must be an object"


@pytest.mark.parametrize("data", [b'{"event_id": ', b"{'event_id': 'x'}", b"{\xff}", b"{}}"])
def test_invalid_json(data):
    with pytest.raises(codecs.CodecError) as err:
        codecs.TRIGGER.decode(data)
    assert err.value.reason == "undecodable"
    assert str(err.value).startswith("not valid JSON: ")


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\x00garbage", b"[1, 2]", b"\x01", b"\x80" * 20])
@pytest.mark.parametrize("name", sorted(FULL))
def test_garbage(name, data):
    with pytest.raises(codecs.CodecError) as err:
        codecs.CODECS[name].decode(data)
    assert err.value.reason == "undecodable"
    assert str(err.value).startswith(f"not a valid Avro {name}: ")


@pytest.mark.parametrize("name", sorted(FULL))
def test_every_truncation_is_rejected(name):
    codec = codecs.CODECS[name]
    data = codec.encode(FULL[name])
    earlier = _earlier_lengths(name)
    for end in range(len(data)):
        if end in earlier:
            continue  # exactly a record of an earlier version: see the test below
        with pytest.raises(codecs.CodecError) as err:
            codec.decode(data[:end])
        assert err.value.reason == "undecodable", end


def _earlier_lengths(name):
    """Lengths at which the full record, cut short, is a whole record of an earlier
    version of its schema (whose fields are a prefix of the current ones)."""
    lengths = set()
    for writer in codecs.CODECS[name]._earlier:
        fields = {f["name"] for f in writer["fields"]}
        lengths.add(len(codecs.AvroCodec(name).encode(FULL[name])) - len(
            _encoded_tail(name, fields)))
    return lengths


def _encoded_tail(name, earlier_fields):
    import io

    import fastavro
    schema = codecs.schema(name)
    tail = {"type": "record", "name": "Tail", "fields": [
        f for f in schema["fields"] if f["name"] not in earlier_fields]}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(tail), FULL[name])
    return out.getvalue()


def test_an_automation_written_before_holds_existed_reads_with_their_defaults():
    import io

    import fastavro
    writer = codecs.schema("sms_cooldown.Automation", "earlier/sms_cooldown.Automation.1.avsc")
    before = {k: v for k, v in FULL["sms_cooldown.Automation"].items()
              if k not in ("outside_window", "on_cooldown", "max_hold_ms", "priority")}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer, before)
    assert codecs.AUTOMATION.decode(out.getvalue()) == {
        **before, "outside_window": "hold", "on_cooldown": "drop",
        "max_hold_ms": 7 * 86_400_000, "priority": 0, "transactional": False}


def test_an_automation_written_before_opt_outs_existed_reads_as_not_transactional():
    import io

    import fastavro
    writer = codecs.schema("sms_cooldown.Automation", "earlier/sms_cooldown.Automation.2.avsc")
    before = {k: v for k, v in FULL["sms_cooldown.Automation"].items() if k != "transactional"}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer, before)
    assert codecs.AUTOMATION.decode(out.getvalue()) == {**before, "transactional": False}


@pytest.mark.parametrize("name", sorted(FULL))
def test_trailing_bytes(name):
    codec = codecs.CODECS[name]
    with pytest.raises(codecs.CodecError) as err:
        codec.decode(codec.encode(FULL[name]) + b"\x00\x02")
    assert err.value.reason == "undecodable"
    assert str(err.value) == f"not a valid Avro {name}: 2 bytes left after the record"


@pytest.mark.parametrize("name", sorted(FULL))
def test_none_is_a_tombstone(name):
    with pytest.raises(codecs.CodecError) as err:
        codecs.CODECS[name].decode(None)
    assert err.value.reason == "tombstone"
    assert str(err.value) == f"a null value where a {name} was expected"


def test_encoding_a_record_without_a_required_field():
    with pytest.raises(codecs.CodecError) as err:
        codecs.SEND_REQUEST.encode({"decision_id": "d-1"})
    assert err.value.reason == "unencodable"
    assert str(err.value).startswith("cannot encode sms_cooldown.SendRequest: ")


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({**TRIGGER_JSON, "occurred_at_ms": "yesterday"}).encode(),
        json.dumps({**TRIGGER_JSON, "segment": ["vip"]}).encode(),
        json.dumps({**TRIGGER_JSON, "phone": 4520123456}).encode(),
        json.dumps({**TRIGGER_JSON, "extra": PHONE}).encode(),
        json.dumps({"event_id": "evt-1", "phone": PHONE}).encode(),
        b'{"event_id": "evt-1", "phone": "+4520123456", ',
        b'{"phone": "+4520123456"}\x00',
    ],
)
def test_decode_errors_never_repeat_the_phone_number(data):
    with pytest.raises(codecs.CodecError) as err:
        codecs.TRIGGER.decode(data)
    assert "4520123456" not in str(err.value)
    assert "4520123456" not in err.value.detail


def test_encode_errors_never_repeat_the_phone_number():
    record = {**FULL["sms_cooldown.Decision"], "e164": PHONE.encode()}
    with pytest.raises(codecs.CodecError) as err:
        codecs.DECISION.encode(record)
    assert "4520123456" not in str(err.value)
