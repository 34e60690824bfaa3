import pytest

from streams.numbers import REASONS, InvalidNumber, region_for_country, to_e164

# 12345678 is not a valid Danish number for phonenumbers; 20123456 (a mobile range) is.
DK_NUMBER = "+4520123456"


@pytest.mark.parametrize(
    "raw",
    [
        "+45 20 12 34 56",
        "004520123456",
        "+4520123456",
        "20123456",
        "20 12 34 56",
        "+45 2012 3456",
        "+45-20-12-34-56",
        "(+45) 20 12 34 56",
        "2012.3456",
        "20/12/34/56",
        "  +45 20 12 34 56\t",
    ],
)
def test_written_forms_of_a_danish_number(raw):
    assert to_e164(raw, "DK") == DK_NUMBER


@pytest.mark.parametrize("country", ["DK", "dk", " DK ", "+45", "45", "0045"])
def test_country_forms_for_numbers_without_prefix(country):
    assert to_e164("20 12 34 56", country) == DK_NUMBER


def test_country_is_ignored_when_the_number_has_a_prefix():
    assert to_e164("+45 20 12 34 56", "US") == DK_NUMBER
    assert to_e164("+1 412 555 1234", "DK") == "+14125551234"
    assert to_e164("+1 (412) 555-1234", "DK") == "+14125551234"


def test_us_number_without_prefix_is_not_taken_for_danish():
    with pytest.raises(InvalidNumber) as exc:
        to_e164("4125551234", "DK")
    assert exc.value.reason in ("invalid_for_region", "too_short", "too_long")


def test_us_number_without_prefix_in_a_us_automation():
    assert to_e164("(412) 555-1234", "US") == "+14125551234"
    assert to_e164("412-555-1234", "+1") == "+14125551234"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty_number"),
        ("   ", "empty_number"),
        (None, "empty_number"),
        (4520123456, "empty_number"),
        ("+1 412 535 abcd", "letters_in_number"),
        ("1-800-FLOWERS", "letters_in_number"),
        ("20123456 ext 12", "letters_in_number"),
        ("20123456x12", "letters_in_number"),
        ("+45 2012345é", "letters_in_number"),
        ("20123456#", "bad_characters"),
        ("*20123456", "bad_characters"),
        ("20123456@", "bad_characters"),
        ("20123456;", "bad_characters"),
        ("２０１２３４５６", "bad_characters"),  # full-width digits
        ("---", "not_a_number"),
        ("()", "not_a_number"),
        ("+", "not_a_number"),
        ("45+20123456", "not_a_number"),
        ("+45 1", "too_short"),
        ("+45 2012345", "too_short"),
        ("2012345", "too_short"),
        ("0045", "too_short"),
        ("+45 201234567", "too_long"),
        ("+45 2012 3456 7890 1234 5678", "too_long"),
        ("+999 12345678", "unknown_country_code"),
        ("+4512345678", "invalid_for_region"),
        ("12345678", "invalid_for_region"),
        ("+47 212345", "invalid_for_region"),  # Norway uses 5 and 8 digits, not 6
    ],
)
def test_rejections(raw, reason):
    with pytest.raises(InvalidNumber) as exc:
        to_e164(raw, "DK")
    assert exc.value.reason == reason


def test_local_only_number_is_too_short():
    # Seven digits are dialable within a US area code only: the area code is missing.
    with pytest.raises(InvalidNumber) as exc:
        to_e164("555-1234", "US")
    assert exc.value.reason == "too_short"


def test_every_reason_code_is_listed_and_has_a_message():
    assert len(set(REASONS)) == len(REASONS)
    for reason in REASONS:
        exc = InvalidNumber(reason)
        assert exc.reason == reason
        assert str(exc)
        assert isinstance(exc, ValueError)


def test_unknown_reason_code_is_refused():
    with pytest.raises(ValueError):
        InvalidNumber("something_else")


@pytest.mark.parametrize(
    "raw",
    ["+1 412 535 abcd", "20123456#", "+45 2012345", "+45 201234567", "+4512345678", "+999 123456"],
)
def test_message_does_not_contain_the_number(raw):
    with pytest.raises(InvalidNumber) as exc:
        to_e164(raw, "DK")
    message = str(exc.value)
    digits = "".join(ch for ch in raw if ch.isdigit())
    assert raw not in message
    assert digits not in message
    assert not any(ch.isdigit() for ch in message)


@pytest.mark.parametrize(
    ("country", "region"),
    [
        ("DK", "DK"),
        ("dk", "DK"),
        (" se ", "SE"),
        ("+45", "DK"),
        ("45", "DK"),
        ("0045", "DK"),
        ("+1", "US"),
        ("1", "US"),
        ("001", "US"),
        ("+44", "GB"),
        ("+7", "RU"),
        ("+358", "FI"),
    ],
)
def test_region_for_country(country, region):
    assert region_for_country(country) == region


@pytest.mark.parametrize(
    "country", ["", "XX", "ZZ", "DEN", "+999", "999", "+0", "045", "+800", "+882", "++45", "+ 45"]
)
def test_region_for_country_unknown(country):
    with pytest.raises(ValueError, match="unknown country"):
        region_for_country(country)


@pytest.mark.parametrize("country", [None, 45])
def test_region_for_country_needs_a_string(country):
    with pytest.raises(ValueError, match="must be a string"):
        region_for_country(country)


def test_unknown_country_is_a_configuration_error_not_an_invalid_number():
    with pytest.raises(ValueError) as exc:
        to_e164("20123456", "XX")
    assert not isinstance(exc.value, InvalidNumber)


@pytest.mark.parametrize("raw", ["+45 20 12 34 56", "004520123456", " +4520123456 "])
def test_without_country_a_number_with_its_own_prefix_is_read(raw):
    assert to_e164(raw, None) == "+4520123456"


@pytest.mark.parametrize("raw", ["20123456", "20 12 34 56"])
def test_without_country_a_number_without_prefix_is_refused(raw):
    with pytest.raises(InvalidNumber) as exc:
        to_e164(raw, None)
    assert exc.value.reason == "missing_country_code"


def test_the_cache_key_changes_no_answer():
    """Written forms with and without their spaces get the same answer (or refusal)."""
    import random

    from streams.numbers import _cache_key, _to_e164

    def answer(raw, country):
        try:
            return _to_e164.__wrapped__(raw, country)
        except InvalidNumber as exc:
            return exc.reason

    rng = random.Random(4)
    for _ in range(5000):
        written = rng.choice(["", "+", "00", "+45", "0045", "(+45) ", "+ 45", "0 0 4 5", "0"])
        for digit in "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12))):
            written += digit + (rng.choice(" -.()/  ") if rng.random() < 0.35 else "")
        for country in (None, "DK", "US"):
            assert answer(_cache_key(written), country) == answer(written, country), written
