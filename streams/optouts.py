"""Opt-outs: numbers that asked for no more SMS, on the compacted topic sms.optouts.

The project writes a number's record keyed by its E.164 form (the command line, the
connector on a STOP reply, the cooldown agent after repeated failed deliveries);
other systems may write theirs with any key, and ingest normalizes the number like an
outside send's. Ingest hands every record to the cooldown agent that owns the number,
which keeps the opt-out in the number's state and decides `opted_out` from then on.
"""

from __future__ import annotations

from streams import codecs
from streams.erasure import HASHED_PREFIX
from streams.numbers import to_e164
from streams.records import OptOut
from streams.rule import OptedOut, opted_out_after
from streams.topics import OPTOUTS

DEFAULT_STOP_KEYWORDS = ("STOP", "STOPP", "AFMELD")
# What may follow a keyword and still mean it: "Stop." or "STOP!".
_TRAILING = ".!"


def normalize_reply(text: str) -> str:
    """A reply as it is compared with the stop keywords: without case, spaces or a
    trailing full stop or exclamation mark."""
    return "".join(text.split()).upper().rstrip(_TRAILING)


def parse_keywords(raw: str) -> tuple[str, ...]:
    """`SMSCOOL_STOP_KEYWORDS`: a comma-separated list; empty means the default."""
    words = tuple(normalize_reply(word) for word in raw.split(",") if word.strip())
    return words or DEFAULT_STOP_KEYWORDS


def opt_out_record(e164: str, opted_out: bool, channel: str, at_ms: int,
                   scope: str | None = None) -> tuple[bytes, bytes]:
    """The key and value of sms.optouts for a number (in E.164) opting out or back in."""
    record = OptOut(phone=e164, opted_out=opted_out, at_ms=at_ms, channel=channel,
                    scope=scope)
    return e164.encode(), codecs.OPT_OUT.encode(record.to_dict())


def publish_opt_out(bootstrap: str, e164: str, opted_out: bool, channel: str, at_ms: int,
                    scope: str | None = None, *, timeout_s: float = 30.0) -> None:
    """Write the record and wait until Kafka has it (NotDelivered when it does not)."""
    from streams.kafka import produce_all, producer

    out = producer(bootstrap, **{"message.timeout.ms": int(timeout_s * 1000)})
    produce_all(out, OPTOUTS, [opt_out_record(e164, opted_out, channel, at_ms, scope)],
                timeout_s=timeout_s + 5)


def read_opt_outs(bootstrap: str) -> dict[str, OptedOut]:
    """The numbers opted out now, by E.164 (an erased one by its hash), as sms.optouts
    says (for the command line): its records applied in the order of each partition,
    as the cooldown agents do."""
    return read_opt_outs_and_keys(bootstrap)[0]


def read_opt_outs_and_keys(bootstrap: str) -> tuple[dict[str, OptedOut],
                                                    dict[str, set[bytes]]]:
    """`read_opt_outs`, and by number the keys of sms.optouts whose records name it (in
    any written form)."""
    from streams.kafka import read_records

    opted_out: dict[str, OptedOut] = {}
    keys: dict[str, set[bytes]] = {}
    for record in read_records(bootstrap, OPTOUTS, idle_s=1.0, timeout_s=300):
        if record.value is None:
            continue
        try:
            value = OptOut.from_dict(codecs.OPT_OUT.decode(record.value))
            number = value.phone if value.phone.startswith(HASHED_PREFIX) \
                else to_e164(value.phone, value.country)
        except (codecs.CodecError, ValueError):
            continue  # ingest dead-letters it; it decides nothing
        if record.key is not None:
            keys.setdefault(number, set()).add(record.key)
        mark = opted_out_after(opted_out.get(number), value.opted_out,
                               min(value.at_ms, record.timestamp_ms), value.channel)
        if mark is None:
            opted_out.pop(number, None)
        else:
            opted_out[number] = mark
    return opted_out, keys
