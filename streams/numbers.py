"""Phone number normalization: turns a number as written by a person or a system into E.164.

Owns the rule "reject, never guess": anything we cannot read with certainty is refused with a
machine-readable reason, because a wrongly normalized number would share (or escape) another
number's cooldown.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

REASONS: tuple[str, ...] = (
    "empty_number",
    "letters_in_number",
    "bad_characters",
    "not_a_number",
    "too_short",
    "too_long",
    "unknown_country_code",
    "invalid_for_region",
    "missing_country_code",
)

# Messages must never include the raw number: exceptions end up in logs and dead-letter topics.
_MESSAGES: dict[str, str] = {
    "empty_number": "The phone number is empty.",
    "letters_in_number": "The phone number contains letters.",
    "bad_characters": "The phone number contains characters other than digits, spaces and +-.()/.",
    "not_a_number": "The text does not look like a phone number.",
    "too_short": "The phone number has too few digits.",
    "too_long": "The phone number has too many digits.",
    "unknown_country_code": "The phone number starts with an unknown country calling code.",
    "invalid_for_region": "The phone number is not a valid number for its country.",
    "missing_country_code": "The phone number has no country prefix and no country was given.",
}

_SEPARATORS = frozenset("+-.()/")
_CALLING_CODE = re.compile(r"(?:\+|00)?([1-9][0-9]{0,2})")

_PARSE_ERRORS: dict[int, str] = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown_country_code",
    NumberParseException.NOT_A_NUMBER: "not_a_number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too_short",
    NumberParseException.TOO_SHORT_NSN: "too_short",
    NumberParseException.TOO_LONG: "too_long",
}

_POSSIBILITY: dict[int, str] = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown_country_code",
    ValidationResult.TOO_SHORT: "too_short",
    # A number that is only dialable locally lacks its area code, i.e. digits are missing.
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too_short",
    ValidationResult.TOO_LONG: "too_long",
    # Between the shortest and longest length but not a length the country uses.
    ValidationResult.INVALID_LENGTH: "invalid_for_region",
}


class InvalidNumber(ValueError):
    """A phone number that was refused; `reason` is one of REASONS."""

    def __init__(self, reason: str) -> None:
        if reason not in _MESSAGES:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(_MESSAGES[reason])
        self.reason = reason


def region_for_country(country: str) -> str:
    """ISO 3166 alpha-2 region of a region ("DK", "dk") or a calling code ("+45", "45", "0045")."""
    if not isinstance(country, str):
        raise ValueError(f"country must be a string, got {type(country).__name__}")
    text = country.strip()
    if text.upper() in phonenumbers.SUPPORTED_REGIONS:
        return text.upper()
    match = _CALLING_CODE.fullmatch(text)
    if match:
        # For shared codes such as +1 this is phonenumbers' main region (US).
        region = phonenumbers.region_code_for_country_code(int(match.group(1)))
        # Non-geographic codes (+800, +882 …) map to "001", which is no country to dial from.
        if region in phonenumbers.SUPPORTED_REGIONS:
            return region
    raise ValueError(
        f"unknown country {country!r}: give an ISO 3166 alpha-2 region such as 'DK' "
        "or a calling code such as '+45'"
    )


_LEADING_ZEROS = re.compile(r"[0 ]*")
# "+45 20 12 34 56", "+45-2012-3456", "0045 2012 3456", "20 12 34 56": digits with single
# spaces or hyphens between them, a leading + at most, and no separator among the
# leading zeros.
_PLAIN_WRITING = re.compile(r"(?:\+|0*[1-9])[0-9]*(?:[ -][0-9]+)*")


def to_e164(raw: str, country: str | None) -> str:
    """E.164 form of `raw`; `country` only applies to numbers written without a country prefix.

    With `country` None the number must carry its own prefix (+45 or 0045).
    """
    return _to_e164(_cache_key(raw), country)


def _cache_key(raw: str) -> str:
    """`raw` without the spaces that change nothing in `to_e164`'s answer.

    phonenumbers takes tens of microseconds a number, and a number comes back often,
    written in several ways: the cache sees "+45 20 12 34 56" and "+45-2012-3456" as
    "+4520123456". Otherwise only spaces go, but not those among leading zeros
    ("0 045…" is not "0045…") nor those of very short strings (phonenumbers gives
    another reason for "6 3" than for "63"); checked against the uncached answer over
    hundreds of thousands of random written forms.
    """
    if not isinstance(raw, str):
        return raw
    if len(raw) >= 8 and _PLAIN_WRITING.fullmatch(raw):
        return raw.replace(" ", "").replace("-", "")
    lead = _LEADING_ZEROS.match(raw).end()  # type: ignore[union-attr]
    compact = raw[:lead] + raw[lead:].replace(" ", "")
    return compact if len(compact) >= 6 else raw


# ~35 MB for the most recent written forms, against ~30 µs a miss.
@lru_cache(maxsize=100_000)
def _to_e164(raw: str, country: str | None) -> str:
    region = region_for_country(country) if country is not None else None
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidNumber("empty_number")
    # Checked before parsing: phonenumbers turns vanity letters (1-800-FLOWERS) into digits and
    # reads "ext"/"x" as extensions; both would be guesses.
    if any(ch.isalpha() for ch in raw):
        raise InvalidNumber("letters_in_number")
    # ASCII digits only: phonenumbers would also read digits of other scripts, a guess too.
    if any(not ("0" <= ch <= "9" or ch.isspace() or ch in _SEPARATORS) for ch in raw):
        raise InvalidNumber("bad_characters")
    if region is None:
        written = raw.strip()
        if written.startswith("00"):
            # 00 is the international prefix almost everywhere, as + is in writing.
            written = "+" + written[2:]
        if not written.startswith("+"):
            raise InvalidNumber("missing_country_code")
        raw = written
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        raise InvalidNumber(_PARSE_ERRORS.get(exc.error_type, "not_a_number")) from None
    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != ValidationResult.IS_POSSIBLE:
        raise InvalidNumber(_POSSIBILITY.get(possibility, "not_a_number"))
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber("invalid_for_region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
