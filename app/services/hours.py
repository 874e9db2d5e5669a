"""A client's business hours: its weekly schedule, holidays and time zone (clients.settings), and what follows
at a given moment: open or not, when it opens next, how many working minutes lie between two moments
(the handover clocks run only in working time). Pure: no I/O.

A client without a weekly schedule is always open. An interval whose end is before its start runs past
midnight ("22:00-02:00" on Friday is Friday 22:00 to Saturday 02:00). A holiday closes the calendar day.
"""

import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from app.schemas.client import WEEKDAYS, ClientSettings, interval_minutes

_DAY = 1440
_LONGEST_SPAN_DAYS = 400  # a clock never needs more; beyond it the count stops growing
_SHORT_DAYS = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")


@dataclass(frozen=True)
class Schedule:
    tz: zoneinfo.ZoneInfo
    week: tuple[tuple[tuple[int, int], ...], ...]  # per weekday (Monday first): (start, end) minutes, end may pass 1440
    holidays: frozenset[date]
    always_open: bool = False  # no weekly schedule configured


def schedule_of(settings: ClientSettings) -> Schedule:
    """The client's schedule from its settings."""
    week = tuple((day, tuple(settings.hours.get(day, ()))) for day in WEEKDAYS)
    return _schedule(settings.timezone, week, tuple(settings.holidays), not settings.hours)


@lru_cache(maxsize=256)
def _schedule(tz: str, hours: tuple[tuple[str, tuple[str, ...]], ...], holidays: tuple[date, ...], always_open: bool) -> Schedule:
    week = []
    for _day, intervals in hours:
        spans = []
        for interval in intervals:
            start, end = interval_minutes(interval)
            spans.append((start, end if end > start else end + _DAY))
        week.append(tuple(sorted(spans)))
    return Schedule(zoneinfo.ZoneInfo(tz), tuple(week), frozenset(holidays), always_open)


def _at(tz: zoneinfo.ZoneInfo, day: date, minutes: int) -> datetime:
    return datetime.combine(day + timedelta(days=minutes // _DAY), time(minutes % _DAY // 60, minutes % 60), tzinfo=tz)


def _intervals(schedule: Schedule, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
    """Working intervals of the shifts that start on the days first..last, in order (aware datetimes)."""
    day = first
    while day <= last:
        if day not in schedule.holidays:
            for start, end in schedule.week[day.weekday()]:
                yield _at(schedule.tz, day, start), _at(schedule.tz, day, end)
        day += timedelta(days=1)


def is_open(schedule: Schedule, at: datetime) -> bool:
    if schedule.always_open:
        return True
    local = at.astimezone(schedule.tz).date()
    return any(start <= at < end for start, end in _intervals(schedule, local - timedelta(days=1), local))


def working_minutes(schedule: Schedule, start: datetime, end: datetime) -> float:
    """Minutes between start and end that fall inside working hours."""
    if end <= start:
        return 0.0
    if schedule.always_open:
        return (end - start).total_seconds() / 60
    first = start.astimezone(schedule.tz).date() - timedelta(days=1)
    last = min(end.astimezone(schedule.tz).date(), first + timedelta(days=_LONGEST_SPAN_DAYS))
    total = 0.0
    for open_, close in _intervals(schedule, first, last):
        overlap = (min(close, end) - max(open_, start)).total_seconds()
        if overlap > 0:
            total += overlap / 60
    return total


def next_open(schedule: Schedule, at: datetime) -> datetime | None:
    """When the business is next open: `at` itself if open now; None if it never opens (no working day at all)."""
    if is_open(schedule, at):
        return at
    local = at.astimezone(schedule.tz).date()
    for start, _end in _intervals(schedule, local, local + timedelta(days=_LONGEST_SPAN_DAYS)):
        if start > at:
            return start
    return None


def closes_at(schedule: Schedule, at: datetime) -> datetime | None:
    """When the current working interval ends (None when closed now, or always open)."""
    if schedule.always_open:
        return None
    local = at.astimezone(schedule.tz).date()
    return next((end for start, end in _intervals(schedule, local - timedelta(days=1), local) if start <= at < end), None)


def describe_week(schedule: Schedule) -> str:
    """The weekly schedule in one line, e.g. "пн–пт 10:00–20:00; сб 11:00–17:00; вс выходной"."""
    if schedule.always_open:
        return "круглосуточно, без выходных"
    labels = [", ".join(f"{_hhmm(s)}–{_hhmm(e)}" for s, e in spans) or "выходной" for spans in schedule.week]
    groups: list[tuple[int, int, str]] = []
    for index, label in enumerate(labels):
        if groups and groups[-1][2] == label and groups[-1][1] == index - 1:
            groups[-1] = (groups[-1][0], index, label)
        else:
            groups.append((index, index, label))
    parts = [f"{_SHORT_DAYS[a]}{'–' + _SHORT_DAYS[b] if b > a else ''} {label}" for a, b, label in groups]
    return "; ".join(parts)


def _hhmm(minutes: int) -> str:
    return f"{minutes % _DAY // 60:02d}:{minutes % 60:02d}"
