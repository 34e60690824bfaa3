"""Sending windows: the local wall-clock hours in which an automation may send SMS.

Owns the window spec ("mon-fri 09:00-20:00") and its canonical display, the default time zone
of a country, and the two questions asked of a window: is an instant inside it, and when does it
open next. Instants are epoch milliseconds; wall-clock time comes from zoneinfo, so DST changes
move the window with the local clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from phonenumbers.tzdata import TIMEZONE_DATA

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS: frozenset[int] = frozenset(range(7))
ALWAYS = "always"  # the spec of a window that is open every minute of every day

_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name: i for names in (DAY_NAMES, _FULL_DAY_NAMES) for i, name in enumerate(names)}

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday
# Offsets are probed this often when looking for a clock change; zones never change twice an hour.
_PROBE_MS = _HOUR_MS
# Any non-empty window opens within a week; the slack only covers clock changes on the way.
_SEARCH_LIMIT_MS = 15 * _DAY_MS

_SPEC = re.compile(r"(?P<days>.+?)\s+(?P<start>\S+?)\s*-\s*(?P<end>\S+)")
_TIME = re.compile(r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})")
_SPEC_HELP = "expected e.g. 'mon-fri 09:00-20:00', 'mon,wed,sat 08:30-21:00', 'daily 09:00-21:00'"


@dataclass(frozen=True)
class SendingWindow:
    days: frozenset[int]  # 0 = Monday … 6 = Sunday; the day on which the window OPENS
    start_minute: int  # minutes after local midnight, 0..1439
    end_minute: int  # 1..1440, exclusive; end <= start wraps past midnight into the next day
    tz: str  # IANA zone name

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        if not self.days:
            raise ValueError("a sending window needs at least one day")
        if not self.days <= ALL_DAYS:
            raise ValueError("sending window days run from 0 (Monday) to 6 (Sunday)")
        if not 0 <= self.start_minute <= 1439:
            raise ValueError("a sending window starts between 00:00 and 23:59")
        if not 1 <= self.end_minute <= 1440:
            raise ValueError("a sending window ends between 00:01 and 24:00")
        if self.start_minute == self.end_minute:
            # Could mean an empty window or a 24-hour one; neither reading is safe to assume.
            raise ValueError(
                "a sending window cannot start and end at the same time; "
                "use 'always' or '00:00-24:00' for whole days"
            )
        _zone(self.tz)

    @property
    def wraps(self) -> bool:
        """True when the window runs past midnight into the day after it opened."""
        return self.end_minute < self.start_minute


def parse_window(spec: str, tz: str) -> SendingWindow:
    """The window described by `spec` in local time of the IANA zone `tz`."""
    if not isinstance(spec, str):
        raise ValueError(f"a sending window spec must be a string; {_SPEC_HELP} or 'always'")
    text = " ".join(spec.lower().split())
    if text == ALWAYS:
        return SendingWindow(ALL_DAYS, 0, 1440, tz)
    match = _SPEC.fullmatch(text)
    if not match:
        raise ValueError(f"bad sending window {spec!r}: {_SPEC_HELP} or 'always'")
    start = _parse_time(match["start"], spec, is_end=False)
    end = _parse_time(match["end"], spec, is_end=True)
    if start == end:
        raise ValueError(
            f"bad sending window {spec!r}: start and end are the same time; "
            "use 'always' or '00:00-24:00' for whole days"
        )
    # An end of 00:00 is the coming midnight, the same instant as 24:00.
    return SendingWindow(_parse_days(match["days"], spec), start, end or 1440, tz)


def format_window(w: SendingWindow) -> str:
    """Canonical spec of `w`; parse_window(format_window(w), w.tz) == w."""
    if w.days == ALL_DAYS and w.start_minute == 0 and w.end_minute == 1440:
        return ALWAYS
    return f"{_format_days(w.days)} {_format_time(w.start_minute)}-{_format_time(w.end_minute)}"


def timezone_for_country(country_region: str) -> str:
    """IANA zone of an ISO 3166 alpha-2 region that lies in a single time zone."""
    region = country_region.strip().upper() if isinstance(country_region, str) else ""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"unknown region {country_region!r}: give an ISO 3166 alpha-2 code such as 'DK'"
        )
    zones = _region_zones(region)
    if len(zones) != 1:
        raise ValueError(
            f"region {region} spans several time zones, or its numbers do not tell "
            f"them apart ({len(zones)} candidates); give the time zone explicitly "
            "as an IANA name such as 'America/New_York'"
        )
    (zone,) = zones
    _zone(zone)
    return zone


def recipient_zone(e164: str, fallback: str) -> str:
    """The IANA zone a window counts in for the number `e164`: the one zone its number
    lies in, or `fallback` (the automation's zone) when its country has several and the
    number does not tell which, or when nothing is known of it."""
    # Most countries lie in one zone: then every number of theirs does, and ingest need
    # not parse the number (a million distinct numbers would miss any cache).
    for length in (1, 2, 3):
        zone = _calling_code_zone(e164[1:1 + length])
        if zone is not None:
            return zone if zone else _number_zone(e164, fallback)
    return fallback


@cache
def _calling_code_zone(code: str) -> str | None:
    """The one zone of every number under calling code `code`, "" when they lie in
    several (or some are unknown), None when `code` is no calling code."""
    if not code.isdigit() or int(code) not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        return None
    zones = {zone for prefix, prefix_zones in TIMEZONE_DATA.items()
             if prefix.startswith(code) for zone in prefix_zones}
    if len(zones) != 1 or phone_timezones.UNKNOWN_TIMEZONE in zones:
        return ""
    (zone,) = zones
    try:
        _zone(zone)
    except ValueError:  # a zone this machine's time zone data lacks
        return ""
    return zone


@lru_cache(maxsize=100_000)
def _number_zone(e164: str, fallback: str) -> str:
    try:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return fallback
    if len(zones) != 1 or zones[0] == phone_timezones.UNKNOWN_TIMEZONE:
        return fallback
    try:
        _zone(zones[0])
    except ValueError:  # a zone this machine's time zone data lacks
        return fallback
    return zones[0]


def in_window(w: SendingWindow, now_ms: int) -> bool:
    """Is the instant `now_ms` inside the window, by the local wall clock of `w.tz`?"""
    return _covers(w, now_ms + _offset_ms(_zone(w.tz), now_ms))


def next_opening_ms(w: SendingWindow, now_ms: int) -> int:
    """`now_ms` if inside the window, else the first later instant at which it is inside."""
    if in_window(w, now_ms):
        return now_ms
    # Windows open and close on whole local minutes, and offsets change on whole minutes:
    # every instant of a minute outside the window has the same next opening. Holding
    # thousands of triggers a second asks for it once a minute.
    return _next_opening_after(w, now_ms // _MINUTE_MS * _MINUTE_MS)


@lru_cache(maxsize=4096)
def _next_opening_after(w: SendingWindow, now_ms: int) -> int:
    zone = _zone(w.tz)
    at = now_ms
    while at - now_ms <= _SEARCH_LIMIT_MS:
        offset = _offset_ms(zone, at)
        if _covers(w, at + offset):
            # Either now, or a clock change that jumped over the opening time (a DST gap) or
            # back into the window (the repeated hour).
            return at
        opening = _next_start_local(w, at + offset) - offset
        change = _next_offset_change(zone, at, opening)
        if change is None:
            return opening
        at = change
    raise RuntimeError(
        f"sending window {format_window(w)!r} in {w.tz} did not open within "
        f"{_SEARCH_LIMIT_MS // _DAY_MS} days"
    )


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ValueError("a time zone must be an IANA name such as 'Europe/Copenhagen'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Copenhagen'"
        ) from None


def _parse_days(text: str, spec: str) -> frozenset[int]:
    text = re.sub(r"\s*([,-])\s*", r"\1", text)
    if text == "daily":
        return ALL_DAYS
    days: set[int] = set()
    for item in text.split(","):
        names = item.split("-")
        if len(names) > 2 or not all(names):
            raise ValueError(f"bad days {item!r} in sending window {spec!r}: {_SPEC_HELP}")
        for name in names:
            if name not in _DAY_INDEX:
                raise ValueError(
                    f"unknown day {name!r} in sending window {spec!r}: "
                    f"use {', '.join(DAY_NAMES)} or daily"
                )
        first, last = _DAY_INDEX[names[0]], _DAY_INDEX[names[-1]]
        # Ranges walk forward and may cross the week end: "fri-mon" is fri, sat, sun, mon.
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def _parse_time(text: str, spec: str, *, is_end: bool) -> int:
    match = _TIME.fullmatch(text)
    if not match:
        raise ValueError(f"bad time {text!r} in sending window {spec!r}: use HH:MM, e.g. 09:00")
    hour, minute = int(match["hour"]), int(match["minute"])
    if is_end and hour == 24 and minute == 0:
        return 1440
    if hour > 23 or minute > 59:
        only_end = " (24:00 is allowed only as an end)" if hour == 24 else ""
        raise ValueError(
            f"bad time {text!r} in sending window {spec!r}: times run from 00:00 to 23:59{only_end}"
        )
    return hour * 60 + minute


def _format_days(days: frozenset[int]) -> str:
    if days == ALL_DAYS:
        return "daily"
    runs = []
    # A run starts at a day whose previous day is absent, so "fri-mon" stays one run.
    for first in sorted(d for d in days if (d - 1) % 7 not in days):
        last = first
        while (last + 1) % 7 in days:
            last = (last + 1) % 7
        runs.append(DAY_NAMES[first] if last == first else f"{DAY_NAMES[first]}-{DAY_NAMES[last]}")
    return ",".join(runs)


def _format_time(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _offset_ms(zone: ZoneInfo, at_ms: int) -> int:
    # Zone offsets change on whole seconds, so the millisecond part cannot matter.
    local = datetime.fromtimestamp(at_ms // 1000, tz=zone)
    offset = local.utcoffset()
    assert offset is not None
    return offset // timedelta(milliseconds=1)


def _covers(w: SendingWindow, local_ms: int) -> bool:
    """Is the local wall-clock time `local_ms` (epoch ms shifted by the offset) in the window?"""
    day, ms_of_day = divmod(local_ms, _DAY_MS)
    weekday = (day + _EPOCH_WEEKDAY) % 7
    minute = ms_of_day // _MINUTE_MS
    if not w.wraps:
        return weekday in w.days and w.start_minute <= minute < w.end_minute
    # After midnight a wrapping window belongs to the day it opened on: yesterday.
    return (weekday in w.days and minute >= w.start_minute) or (
        (weekday - 1) % 7 in w.days and minute < w.end_minute
    )


def _next_start_local(w: SendingWindow, local_ms: int) -> int:
    """First local wall-clock time at or after `local_ms` at which the window opens."""
    today = local_ms // _DAY_MS
    for day in range(today, today + 8):
        start = day * _DAY_MS + w.start_minute * _MINUTE_MS
        if (day + _EPOCH_WEEKDAY) % 7 in w.days and start >= local_ms:
            return start
    raise AssertionError("a window with at least one day opens within eight days")


def _next_offset_change(zone: ZoneInfo, after_ms: int, until_ms: int) -> int | None:
    """First instant in (after_ms, until_ms] whose UTC offset differs from after_ms's, if any."""
    base = _offset_ms(zone, after_ms)
    low = after_ms
    while low < until_ms:
        high = min(low + _PROBE_MS, until_ms)
        if _offset_ms(zone, high) != base:
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_ms(zone, middle) == base:
                    low = middle
                else:
                    high = middle
            return high
        low = high
    return None


@cache
def _region_zones(region: str) -> frozenset[str]:
    """Every zone phonenumbers maps numbers of `region` to.

    Countries that share a calling code (+1, +7, +44 …) also share the prefix data, so zones that
    are another sharing region's own (its example number's) are taken out; anything left that
    cannot be told apart makes the region count as multi-zone, which only asks for an explicit zone.
    """
    code = phonenumbers.country_code_for_region(region)
    zones: set[str] = set()
    for prefix, prefix_zones in TIMEZONE_DATA.items():
        if prefix.startswith(str(code)):
            zones.update(prefix_zones)
    for other in phonenumbers.region_codes_for_country_code(code):
        if other != region:
            zones -= _example_zones(other)
    zones |= _example_zones(region)
    zones.discard(phone_timezones.UNKNOWN_TIMEZONE)
    return frozenset(zones)


def _example_zones(region: str) -> set[str]:
    example = phonenumbers.example_number(region)
    if example is None:
        return set()
    return set(phone_timezones.time_zones_for_number(example))
