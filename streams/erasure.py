"""Erasure: a phone number removed from every state the project keeps, except that an
opt-out survives as a keyed hash, so that the person is not texted again.

`smscool erase NUMBER` writes a request to sms.erasures and tombstones the number's
records on sms.optouts. Ingest hands the request to the cooldown agent that owns the
number, which deletes its state (a tombstone in the table's changelog) and ends its
held messages (tombstones on sms.held); the connector drops the number from its
ledger. An opted-out number's opt-out is kept in the table under
HMAC-SHA256(`SMSCOOL_NUMBER_SECRET`, E.164) instead, and on sms.optouts as a record
whose phone is that hash; without a secret it stays under the number itself.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from streams import codecs
from streams.records import Erasure, OptOut
from streams.rule import OptedOut

# How a hashed number is written where a phone would be (sms.optouts `phone`).
HASHED_PREFIX = "hmac-sha256:"
# The table's key of an erased number's opt-out: nothing else starts with this byte.
OPT_OUT_KEY_PREFIX = b"\x01optout\x00"
_TIME = struct.Struct(">q")


def number_hash(secret: bytes, e164: str) -> str:
    """The number as its keyed hash, the only form an erased number is kept in."""
    return HASHED_PREFIX + hmac.new(secret, e164.encode(), hashlib.sha256).hexdigest()


def opt_out_key(secret: bytes, e164: bytes) -> bytes:
    return OPT_OUT_KEY_PREFIX + hmac.new(secret, e164, hashlib.sha256).digest()


def encode_mark(mark: OptedOut) -> bytes:
    return _TIME.pack(mark.at_ms) + mark.channel.encode()


def decode_mark(data: bytes) -> OptedOut:
    (at_ms,) = _TIME.unpack_from(data)
    return OptedOut(at_ms, data[_TIME.size:].decode())


def erasure_record(e164: str, at_ms: int, by: str) -> tuple[bytes, bytes]:
    return e164.encode(), codecs.ERASURE.encode(
        Erasure(phone=e164, requested_at_ms=at_ms, requested_by=by).to_dict())


def hashed_opt_out_record(secret: bytes, e164: str, mark: OptedOut) -> tuple[bytes, bytes]:
    """sms.optouts' record of an erased number that stays opted out: keyed and named by
    its hash."""
    hashed = number_hash(secret, e164)
    return hashed.encode(), codecs.OPT_OUT.encode(OptOut(
        phone=hashed, opted_out=True, at_ms=mark.at_ms, channel=mark.channel).to_dict())
