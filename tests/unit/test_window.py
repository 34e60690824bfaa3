from datetime import UTC, datetime, timedelta
from itertools import combinations
from zoneinfo import ZoneInfo

import pytest

from streams.window import (
    ALL_DAYS,
    ALWAYS,
    SendingWindow,
    format_window,
    in_window,
    next_opening_ms,
    parse_window,
    timezone_for_country,
)

CPH = "Europe/Copenhagen"
NYC = "America/New_York"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
MINUTE = 60_000
DAY = 86_400_000


def utc(text: str) -> int:
    """Epoch ms of an ISO time given in UTC, e.g. "2026-03-29T01:00"."""
    return (datetime.fromisoformat(text).replace(tzinfo=UTC) - EPOCH) // MS


def local(text: str, tz: str = CPH, fold: int = 0) -> int:
    """Epoch ms of a local wall-clock time in `tz`."""
    wall = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz), fold=fold)
    return (wall - EPOCH) // MS


# 2026-01-05 is a Monday; January has no DST change in either zone.
MON = "2026-01-05"
TUE = "2026-01-06"
THU = "2026-01-08"
FRI = "2026-01-09"
SAT = "2026-01-10"
SUN = "2026-01-11"
NEXT_MON = "2026-01-12"


# --- parsing and formatting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "days", "start", "end"),
    [
        ("mon-fri 09:00-20:00", {0, 1, 2, 3, 4}, 540, 1200),
        ("mon,wed,sat 08:30-21:00", {0, 2, 5}, 510, 1260),
        ("daily 09:00-21:00", ALL_DAYS, 540, 1260),
        ("always", ALL_DAYS, 0, 1440),
        ("  ALWAYS ", ALL_DAYS, 0, 1440),
        ("sat-sun 22:00-02:00", {5, 6}, 1320, 120),
        ("fri-mon 10:00-11:00", {4, 5, 6, 0}, 600, 660),
        ("sun-tue 10:00-11:00", {6, 0, 1}, 600, 660),
        ("mon-mon 10:00-11:00", {0}, 600, 660),
        ("Mon - Fri  9:00 - 17:00", {0, 1, 2, 3, 4}, 540, 1020),
        ("monday,friday 09:00-17:00", {0, 4}, 540, 1020),
        ("mon, wed-thu, sun 07:05-07:06", {0, 2, 3, 6}, 425, 426),
        ("mon 00:00-24:00", {0}, 0, 1440),
        ("mon 22:00-24:00", {0}, 1320, 1440),
        ("mon 22:00-00:00", {0}, 1320, 1440),  # 00:00 as an end is the coming midnight
        ("mon 23:59-00:01", {0}, 1439, 1),
        ("mon,mon,tue 08:00-09:00", {0, 1}, 480, 540),
    ],
)
def test_parse_window(spec, days, start, end):
    assert parse_window(spec, CPH) == SendingWindow(frozenset(days), start, end, CPH)


def test_always_spec():
    assert ALWAYS == "always"
    assert parse_window(ALWAYS, NYC) == SendingWindow(ALL_DAYS, 0, 1440, NYC)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "bad sending window"),
        ("never", "bad sending window"),
        ("mon-fri", "bad sending window"),
        ("09:00-20:00", "bad sending window"),
        ("mon-fri 09:00", "bad sending window"),
        ("mon-fri 09:00-20:00 extra", "bad sending window"),
        ("xyz 09:00-20:00", "unknown day 'xyz'"),
        ("mon-xyz 09:00-20:00", "unknown day 'xyz'"),
        ("mon,,tue 09:00-20:00", "bad days"),
        ("mon- 09:00-20:00", "bad days"),
        ("mon-tue-wed 09:00-20:00", "bad days"),
        ("mon 9-17", "bad time '9'"),
        ("mon 0900-1700", "bad time"),
        ("mon 09:0-17:00", "bad time"),
        ("mon 24:00-10:00", "24:00 is allowed only as an end"),
        ("mon 09:00-24:01", "bad time '24:01'"),
        ("mon 09:00-25:00", "bad time '25:00'"),
        ("mon 09:60-10:00", "bad time '09:60'"),
        ("mon 09:00-09:00", "start and end are the same"),
        ("mon 00:00-00:00", "start and end are the same"),
    ],
)
def test_parse_window_rejects(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_window(spec, CPH)


@pytest.mark.parametrize("tz", ["", "Nowhere/City", "Europe", "../../etc/passwd", "CET/"])
def test_parse_window_rejects_unknown_zone(tz):
    with pytest.raises(ValueError, match="time zone"):
        parse_window("mon-fri 09:00-20:00", tz)


@pytest.mark.parametrize(
    ("days", "start", "end", "message"),
    [
        (set(), 540, 1200, "at least one day"),
        ({7}, 540, 1200, "0 \\(Monday\\) to 6"),
        ({-1}, 540, 1200, "0 \\(Monday\\) to 6"),
        ({0}, -1, 1200, "starts between"),
        ({0}, 1440, 1200, "starts between"),
        ({0}, 540, 0, "ends between"),
        ({0}, 540, 1441, "ends between"),
        ({0}, 540, 540, "same time"),
    ],
)
def test_sending_window_rejects(days, start, end, message):
    with pytest.raises(ValueError, match=message):
        SendingWindow(frozenset(days), start, end, CPH)


def test_sending_window_is_frozen():
    w = parse_window("mon 09:00-10:00", CPH)
    with pytest.raises(AttributeError):
        w.start_minute = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("mon-fri 09:00-20:00", "mon-fri 09:00-20:00"),
        ("Mon - Fri 9:00 - 20:00", "mon-fri 09:00-20:00"),
        ("mon,tue,wed,thu,fri 09:00-20:00", "mon-fri 09:00-20:00"),
        ("mon,wed,sat 08:30-21:00", "mon,wed,sat 08:30-21:00"),
        ("sat,sun 08:30-21:00", "sat-sun 08:30-21:00"),
        ("sun,mon,fri,sat 08:30-21:00", "fri-mon 08:30-21:00"),
        ("mon,sun 08:30-21:00", "sun-mon 08:30-21:00"),
        ("mon-sun 09:00-21:00", "daily 09:00-21:00"),
        ("daily 09:00-21:00", "daily 09:00-21:00"),
        ("daily 00:00-24:00", "always"),
        ("always", "always"),
        ("sat-sun 22:00-02:00", "sat-sun 22:00-02:00"),
        ("mon 22:00-00:00", "mon 22:00-24:00"),
        ("tue,thu-sat 00:00-24:00", "tue,thu-sat 00:00-24:00"),
    ],
)
def test_format_window_is_canonical(spec, canonical):
    w = parse_window(spec, CPH)
    assert format_window(w) == canonical
    assert parse_window(canonical, CPH) == w


def test_format_parse_round_trip_for_every_day_set():
    times = [(0, 1440), (540, 1200), (1320, 120), (1439, 1), (0, 1), (1, 0 + 1440), (720, 719)]
    for size in range(1, 8):
        for days in combinations(range(7), size):
            for start, end in times:
                w = SendingWindow(frozenset(days), start, end, NYC)
                assert parse_window(format_window(w), NYC) == w, format_window(w)


# --- in_window --------------------------------------------------------------------------------

OFFICE = parse_window("mon-fri 09:00-20:00", CPH)


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (f"{MON}T08:59:59.999", False),
        (f"{MON}T09:00:00.000", True),
        (f"{MON}T19:59:59.999", True),
        (f"{MON}T20:00:00.000", False),
        (f"{MON}T00:00:00.000", False),
        (f"{FRI}T12:00", True),
        (f"{FRI}T20:00", False),
        (f"{SAT}T12:00", False),
        (f"{SUN}T12:00", False),
    ],
)
def test_in_window_edges(when, inside):
    assert in_window(OFFICE, local(when)) is inside


LATE_FRIDAY = parse_window("fri 22:00-02:00", CPH)


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (f"{FRI}T21:59:59.999", False),
        (f"{FRI}T22:00", True),
        (f"{FRI}T23:59:59.999", True),
        (f"{SAT}T00:00", True),
        (f"{SAT}T01:59", True),
        (f"{SAT}T01:59:59.999", True),
        (f"{SAT}T02:00", False),
        (f"{SAT}T22:30", False),
        (f"{FRI}T01:59", False),  # Thursday's opening; Thursday is not listed
        (f"{FRI}T00:00", False),
    ],
)
def test_in_window_wraps_past_midnight(when, inside):
    assert in_window(LATE_FRIDAY, local(when)) is inside


@pytest.mark.parametrize(
    ("spec", "when", "inside"),
    [
        ("sun 22:00-02:00", f"{NEXT_MON}T01:00", True),  # opened Sunday, past the week end
        ("sun 22:00-02:00", f"{SUN}T01:00", False),  # Saturday's opening
        ("sat-sun 22:00-02:00", f"{NEXT_MON}T01:59", True),
        ("sat-sun 22:00-02:00", f"{SAT}T01:00", False),
        ("sat-sun 22:00-02:00", f"{SUN}T01:00", True),
        ("fri-mon 10:00-11:00", f"{SUN}T10:30", True),
        ("fri-mon 10:00-11:00", f"{MON}T10:30", True),
        ("fri-mon 10:00-11:00", f"{TUE}T10:30", False),
        ("fri-mon 10:00-11:00", f"{THU}T10:30", False),
        ("mon 22:00-24:00", f"{MON}T23:59:59.999", True),
        ("mon 22:00-24:00", f"{TUE}T00:00", False),
        ("mon 00:00-24:00", f"{MON}T00:00", True),
        ("mon 00:00-24:00", f"{SUN}T23:59:59.999", False),
    ],
)
def test_in_window_week_wrap(spec, when, inside):
    assert in_window(parse_window(spec, CPH), local(when)) is inside


@pytest.mark.parametrize("now", [0, -1, utc(f"{MON}T00:00"), utc("2026-03-29T01:30"), 2**42])
def test_always_is_always_inside(now):
    w = parse_window(ALWAYS, CPH)
    assert in_window(w, now)
    assert next_opening_ms(w, now) == now


@pytest.mark.parametrize(
    ("instant", "in_copenhagen", "in_new_york"),
    [
        (f"{MON}T12:00", True, False),  # 13:00 in Copenhagen, 07:00 in New York
        (f"{MON}T14:00", True, True),  # 15:00 and 09:00
        (f"{MON}T19:30", False, True),  # 20:30 and 14:30
        (f"{TUE}T00:30", False, True),  # Tue 01:30 and Mon 19:30
        (f"{TUE}T01:00", False, False),  # Tue 02:00 and Mon 20:00
    ],
)
def test_same_instant_in_two_time_zones(instant, in_copenhagen, in_new_york):
    now = utc(instant)
    assert in_window(parse_window("mon-fri 09:00-20:00", CPH), now) is in_copenhagen
    assert in_window(parse_window("mon-fri 09:00-20:00", NYC), now) is in_new_york


# --- DST -------------------------------------------------------------------------------------

DAILY = parse_window("daily 09:00-20:00", CPH)


@pytest.mark.parametrize(
    ("now", "opening", "closing"),
    [
        # Copenhagen: CET (+1) until 2026-03-29 01:00 UTC, then CEST (+2).
        ("2026-03-28T00:00", "2026-03-28T08:00", "2026-03-28T19:00"),
        ("2026-03-29T00:00", "2026-03-29T07:00", "2026-03-29T18:00"),
        ("2026-03-30T00:00", "2026-03-30T07:00", "2026-03-30T18:00"),
        # CEST until 2026-10-25 01:00 UTC, then CET.
        ("2026-10-24T00:00", "2026-10-24T07:00", "2026-10-24T18:00"),
        ("2026-10-25T00:00", "2026-10-25T08:00", "2026-10-25T19:00"),
    ],
)
def test_window_follows_the_local_clock_across_dst(now, opening, closing):
    assert next_opening_ms(DAILY, utc(now)) == utc(opening)
    assert not in_window(DAILY, utc(opening) - 1)
    assert in_window(DAILY, utc(opening))
    assert in_window(DAILY, utc(closing) - 1)
    assert not in_window(DAILY, utc(closing))


def test_opening_in_the_spring_gap_opens_after_the_gap():
    # 2026-03-29 02:30 does not exist in Copenhagen: 02:00 CET is followed by 03:00 CEST.
    w = parse_window("sun 02:30-04:00", CPH)
    gap_end = utc("2026-03-29T01:00")
    assert local("2026-03-29T03:00") == gap_end
    assert next_opening_ms(w, utc("2026-03-28T12:00")) == gap_end
    assert next_opening_ms(w, gap_end - 1) == gap_end
    assert not in_window(w, gap_end - 1)  # 01:59:59.999 CET
    assert in_window(w, gap_end)
    assert not in_window(w, local("2026-03-29T04:00"))


def test_window_inside_the_spring_gap_opens_the_next_week():
    w = parse_window("sun 02:00-02:30", CPH)
    assert next_opening_ms(w, utc("2026-03-28T12:00")) == local("2026-04-05T02:00")


def test_opening_in_the_autumn_overlap_opens_at_the_first_occurrence():
    w = parse_window("sun 02:30-04:00", CPH)
    first = local("2026-10-25T02:30", fold=0)
    assert first == utc("2026-10-25T00:30")
    assert next_opening_ms(w, utc("2026-10-24T12:00")) == first


def test_repeated_autumn_hour_opens_the_window_again():
    # 02:30-02:45 happens twice on 2026-10-25 in Copenhagen: in CEST, then again in CET.
    w = parse_window("sun 02:30-02:45", CPH)
    assert in_window(w, utc("2026-10-25T00:30"))
    assert not in_window(w, utc("2026-10-25T00:50"))
    assert next_opening_ms(w, utc("2026-10-25T00:50")) == utc("2026-10-25T01:30")
    assert in_window(w, utc("2026-10-25T01:30"))


def test_clock_falling_back_into_the_window_opens_it():
    # 01:30-02:30 closes at 02:30 CEST; at 03:00 CEST the clock falls back to 02:00 CET.
    w = parse_window("sun 01:30-02:30", CPH)
    assert not in_window(w, utc("2026-10-25T00:45"))
    assert next_opening_ms(w, utc("2026-10-25T00:45")) == utc("2026-10-25T01:00")


# --- next_opening_ms -------------------------------------------------------------------------


def test_next_opening_inside_is_now():
    now = local(f"{MON}T12:34:56.789")
    assert next_opening_ms(OFFICE, now) == now


@pytest.mark.parametrize(
    ("now", "opening"),
    [
        (f"{MON}T08:59:59.999", f"{MON}T09:00"),
        (f"{MON}T00:00", f"{MON}T09:00"),
        (f"{MON}T20:00", f"{TUE}T09:00"),
        (f"{FRI}T20:00", f"{NEXT_MON}T09:00"),  # across the weekend
        (f"{SAT}T12:00", f"{NEXT_MON}T09:00"),
        (f"{SUN}T23:59:59.999", f"{NEXT_MON}T09:00"),
    ],
)
def test_next_opening(now, opening):
    assert next_opening_ms(OFFICE, local(now)) == local(opening)


def test_next_opening_across_a_weekend_with_a_dst_change():
    assert next_opening_ms(OFFICE, utc("2026-03-27T19:00")) == utc("2026-03-30T07:00")


@pytest.mark.parametrize(
    ("spec", "now", "opening"),
    [
        ("fri 22:00-02:00", f"{SAT}T02:00", "2026-01-16T22:00"),
        ("fri 22:00-02:00", f"{FRI}T01:00", f"{FRI}T22:00"),
        ("sun 22:00-02:00", f"{NEXT_MON}T02:00", "2026-01-18T22:00"),
        ("mon 09:00-10:00", f"{MON}T10:00", f"{NEXT_MON}T09:00"),
    ],
)
def test_next_opening_of_wrapping_and_weekly_windows(spec, now, opening):
    assert next_opening_ms(parse_window(spec, CPH), local(now)) == local(opening)


@pytest.mark.parametrize(
    ("tz", "first_day"),
    [
        (CPH, "2026-03-25"),
        (CPH, "2026-10-21"),
        (NYC, "2026-03-04"),
        (NYC, "2026-10-28"),
        ("Australia/Lord_Howe", "2026-04-01"),  # a 30-minute DST change
    ],
)
@pytest.mark.parametrize(
    "spec",
    [
        "daily 09:00-20:00",
        "sun 02:30-04:00",
        "sat-sun 22:00-02:00",
        "sun 01:30-02:30",
        "thu 02:15-02:20",
    ],
)
def test_next_opening_matches_a_minute_by_minute_scan(tz, first_day, spec):
    # Every window edge and clock change here falls on a whole UTC minute, so scanning the
    # minutes finds the true first instant inside the window.
    w = parse_window(spec, tz)
    start = utc(f"{first_day}T00:00")
    minutes = 12 * 24 * 60
    inside = [in_window(w, start + i * MINUTE) for i in range(minutes)]
    first_inside = [0] * minutes
    following = None
    for i in range(minutes - 1, -1, -1):
        if inside[i]:
            following = i
        first_inside[i] = following
    for i in range(0, 4 * 24 * 60, 23):
        expected = first_inside[i]
        assert expected is not None
        assert next_opening_ms(w, start + i * MINUTE) == start + expected * MINUTE
        # A query a millisecond into the minute opens at the same instant, or now if inside.
        now = start + i * MINUTE + 1
        assert next_opening_ms(w, now) == (now if inside[i] else start + expected * MINUTE)


# --- timezone_for_country --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "zone"),
    [
        ("DK", "Europe/Copenhagen"),
        ("dk", "Europe/Copenhagen"),
        ("SE", "Europe/Stockholm"),
        ("DE", "Europe/Berlin"),
        ("GB", "Europe/London"),
        ("FI", "Europe/Helsinki"),
        ("AX", "Europe/Mariehamn"),
        ("NO", "Europe/Oslo"),
    ],
)
def test_timezone_for_country(region, zone):
    assert timezone_for_country(region) == zone
    ZoneInfo(timezone_for_country(region))


@pytest.mark.parametrize("region", ["US", "CA", "AU", "RU", "BR", "MX", "ES", "PT"])
def test_timezone_for_country_with_several_zones(region):
    with pytest.raises(ValueError, match="give the time zone explicitly"):
        timezone_for_country(region)


@pytest.mark.parametrize("region", ["", "XX", "DNK", "+45", None])
def test_timezone_for_country_unknown_region(region):
    with pytest.raises(ValueError, match="unknown region"):
        timezone_for_country(region)
