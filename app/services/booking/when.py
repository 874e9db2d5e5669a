"""When a customer wants to come, read from their words in Russian or Kazakh (Latin-typed too), in the client's
time zone and checked against its business hours. Pure: no I/O.

The dates are dateparser's (ru + kk, its data ships with the package): "завтра", "в субботу", "через неделю",
"6 декабря", "ертең", "сенбі", "3 қаңтар". Before it reads the text, a few forms it does not know are rewritten
into ones it does (_KK_FORMS, _DAY_MONTH: Kazakh case endings "сенбіде", "ертеңге"; "бүрсігүні"; "2 күннен
кейін"; "1-го"; a bare "6.12"). The time of day is read here, because dateparser drops a bare hour ("завтра в
15" is 10:00 to it): "в 15", "к 15:30", "сағат 3-те", "в 7 вечера", "после обеда". An hour from 1 to 11 without
"утра/вечера" is the one of the two (3:00 or 15:00) the business is open at; when neither or both, 1-7 is
afternoon and 8-11 morning.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from dateparser.search import search_dates

from app.services import hours
from app.utils.text import latin_to_cyrillic

LANGUAGES = ["ru", "kk"]
_HORIZON_DAYS = 366  # a booking further ahead is not what the customer meant ("мне 25 лет")

_MONTHS = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября", "ноября", "декабря")
_KK_NUMBERS = {"бір": "1", "екі": "2", "үш": "3", "төрт": "4", "бес": "5", "алты": "6", "жеті": "7"}
_KK_UNITS = {"күн": "дней", "апта": "недель", "ай": "месяцев"}
_KK_MONTHS = "қаңтар|ақпан|наурыз|сәуір|мамыр|маусым|шілде|тамыз|қыркүйек|қазан|қараша|желтоқсан"
_KK_DAYS = "ертең|бүгін|бүрсігүні|дүйсенбі|сейсенбі|сәрсенбі|бейсенбі|жұма|сенбі|жексенбі"
# Kazakh forms dateparser does not know, rewritten into ones it does (kept small: each one is in the table test).
_KK_FORMS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # a day word with a case ending: "сенбіде", "ертеңге", "жұмаға", "ертеңгі", "дүйсенбі күні"
    (re.compile(rf"\b({_KK_DAYS})(?:ге|ке|ға|қа|де|те|да|та|гі|кі|ғы|қы|нде|нда|ні|нің)?(?:\s+күні)?\b"), r"\1"),
    (re.compile(r"\bбүрсігүні\b"), "послезавтра"),
    # a month with a case ending: "3 қаңтарда", "5 желтоқсанға"
    (re.compile(rf"\b({_KK_MONTHS})(?:ында|інде|нда|нде|да|де|та|те|ға|ге|қа|ке)\b"), r"\1"),
    # "2 күннен кейін", "бір аптадан кейін": in N days / weeks / months
    (
        re.compile(r"\b(\d+|бір|екі|үш|төрт|бес|алты|жеті)\s+(күн|апта|ай)(?:нан|нен|дан|ден|тан|тен)\s+кейін\b"),
        lambda m: f"через {_KK_NUMBERS.get(m.group(1), m.group(1))} {_KK_UNITS[m.group(2)]}",
    ),
    (re.compile(r"\b(күн|апта|ай)(?:нан|нен|дан|ден|тан|тен)\s+кейін\b"), lambda m: f"через 1 {_KK_UNITS[m.group(1)]}"),
    (re.compile(rf"\bкелесі\s+апта(?:да|ның)?\s+({_KK_DAYS})"), r"\1"),  # next week's Tuesday: the coming Tuesday
    (re.compile(r"\bкелесі\s+аптада\b"), "келесі апта"),
)
_DAY_OF_MONTH = re.compile(r"(?:^|\s)(?:на |в |к )?(\d{1,2})\s*(?:-?го|-?е|числа)\b")
_ORDINAL = re.compile(r"\b(\d{1,2})\s*-?\s*(?:го|ое|ого|е|ші|шы|сі|нші|ншы|інші)\b")
_DAY_MONTH = re.compile(r"(?<![\d.:/])(\d{1,2})[./](\d{1,2})(?:[./](\d{2,4}))?(?![\d.:/])")

_HOUR = r"([01]?\d|2[0-3])"
_MARK = r"(утра|утром|дня|днём|днем|вечера|вечером|ночи|таңғы|кешкі|түнгі)"
_NOT_TIME = (
    r"(?!\s*(?:[./]\d|-?го\b|числ|январ|феврал|март|апрел|ма[яй]\b|июн|июл|август|сентябр|октябр|ноябр|декабр|человек|чел\b|персон|"
    r"гост|адам|мин|лет|год|тг|тенге|₸|%|тыс|раз|дн|недел|месяц|кун|күн|апта|ай\b))"
)
_DAY_WORDS = (
    r"(?:сегодня|завтра|послезавтра|понедельник|вторник|среду|среда|четверг|пятницу|пятница|субботу|суббота|воскресенье|" + _KK_DAYS + ")"
)
_TIMES = (
    re.compile(rf"\b{_HOUR}:([0-5]\d)\b(?:\s*-?\s*(?:те|та|де|да|ге|ке|ға|қа)\b)?(?:\s*{_MARK})?"),
    re.compile(
        rf"(?:\b(?:в|к|ко|на|с|со|после|около|часов в|часам к|сағат)\s+|{_MARK}\s+(?:сағат\s+)?)"
        rf"{_HOUR}(?:[.:-]([0-5]\d))?\b{_NOT_TIME}(?:\s*(?:час(?:а|ов)?|ч)\b)?(?:\s*{_MARK})?"
    ),
    re.compile(rf"\b{_HOUR}(?:[.:]([0-5]\d))?\s*-?\s*(?:те|та|де|да|ге|ке|ға|қа)\b(?:\s*{_MARK})?"),
    re.compile(rf"(?<!через )\b{_HOUR}\s*(?:час(?:а|ов)?|ч)\b(?:\s*{_MARK})?"),
    # "завтра 15": a bare hour right after a day word (the day word stays for dateparser)
    re.compile(rf"\b{_DAY_WORDS}\s+{_HOUR}(?:[.:]([0-5]\d))?\b{_NOT_TIME}(?:\s*{_MARK})?"),
)
_AM = {"утра", "утром", "таңғы", "ночи", "түнгі"}
# A part of the day without an hour: the time it stands for.
_PERIODS = (
    (re.compile(r"\bпосле обеда\b|\bво второй половине дня\b|\bтүстен кейін\b|\bтүстен соң\b"), time(14, 0)),
    (re.compile(r"\bдо обеда\b|\bтүске дейін\b"), time(11, 0)),
    (re.compile(r"\bс утра\b|\bутром\b|\bпораньше\b|\bтаңертең\w*|\bтаңғы\b"), time(10, 0)),
    (re.compile(r"\bв полдень\b|\bтүскі\s+12\b"), time(12, 0)),
    (re.compile(r"\bв обед\b|\bднём\b|\bднем\b|\bтүсте\b"), time(13, 0)),
    (re.compile(r"\bвечером\b|\bпод вечер\b|\bкешке\b|\bкешкісін\b|\bкешкі\b"), time(18, 0)),
)


@dataclass(frozen=True)
class Said:
    """What the customer said about when: a day, a time of day, or both (None: not said)."""

    day: date | None = None
    at: time | None = None
    hour_is_ambiguous: bool = False  # an hour 1-11 without "утра/вечера": 3:00 or 15:00

    @property
    def anything(self) -> bool:
        return self.day is not None or self.at is not None


class Problem(StrEnum):
    PAST = "past"
    CLOSED = "closed"


def normalise(text: str) -> str:
    """Lower case, Latin-typed Russian read as Cyrillic, ё as е, the Kazakh forms dateparser does not know rewritten."""
    lowered = text.lower().replace("ё", "е")
    if re.search(r"[a-z]", lowered):
        lowered = latin_to_cyrillic(lowered)
    for pattern, replacement in _KK_FORMS:
        lowered = pattern.sub(replacement, lowered)
    return lowered


def read(text: str, *, now: datetime) -> Said:
    """The day and the time of day in the customer's words (now: aware, in the client's time zone)."""
    norm = normalise(text)
    at, ambiguous, rest = _time_of_day(norm)
    day_of_month = _DAY_OF_MONTH.search(rest)
    rest = _ORDINAL.sub(r"\1", rest)
    rest = _DAY_MONTH.sub(_day_month, rest)
    day, day_time = _day(rest, now)
    if day is None and day_of_month is not None:
        day = _next_day_of_month(int(day_of_month.group(1)), now.date())
    if at is None and day_time is not None:
        at = day_time  # "через 2 часа": the day and the time are dateparser's
    return Said(day, at, ambiguous and at is not None)


def resolve(said: Said, *, now: datetime, schedule: hours.Schedule, day: date | None = None) -> datetime | None:
    """The moment meant, in the client's time zone: the day said (else `day`, known from before; else the next
    one on which the time is still ahead), at the time said. None without a time."""
    if said.at is None:
        return None
    local_now = now.astimezone(schedule.tz)
    on = said.day or day
    if on is None:
        on = local_now.date()
        if _at(on, _hour_for(said, on, schedule), schedule) <= local_now:
            on += timedelta(days=1)
    return _at(on, _hour_for(said, on, schedule), schedule)


def check(moment: datetime, *, now: datetime, schedule: hours.Schedule) -> Problem | None:
    """Why the moment cannot be booked: already past, or the business is closed then."""
    if moment <= now:
        return Problem.PAST
    if not hours.is_open(schedule, moment):
        return Problem.CLOSED
    return None


def _at(day: date, at: time, schedule: hours.Schedule) -> datetime:
    return datetime.combine(day, at, tzinfo=schedule.tz)


def _hour_for(said: Said, day: date, schedule: hours.Schedule) -> time:
    """The said time; an ambiguous hour as the one the business is open at (see the module docstring)."""
    assert said.at is not None
    if not said.hour_is_ambiguous:
        return said.at
    morning, afternoon = said.at, said.at.replace(hour=said.at.hour + 12)
    open_morning = hours.is_open(schedule, _at(day, morning, schedule))
    open_afternoon = hours.is_open(schedule, _at(day, afternoon, schedule))
    if open_morning != open_afternoon:
        return morning if open_morning else afternoon
    return afternoon if said.at.hour <= 7 else morning


def _time_of_day(norm: str) -> tuple[time | None, bool, str]:
    """The time of day said (explicit first, then a part of the day), whether its hour is ambiguous, and the text
    without it (for the day)."""
    for pattern in _TIMES:
        match = pattern.search(norm)
        if match is None:
            continue
        groups = [g for g in match.groups()]
        hour_text = next(g for g in groups if g is not None and g.isdigit())
        index = groups.index(hour_text)
        minute_text = groups[index + 1] if index + 1 < len(groups) else None
        hour, minute = int(hour_text), int(minute_text) if minute_text and minute_text.isdigit() else 0
        marks = {g for g in groups if g is not None and not g.isdigit()}
        period = _period(norm)
        ambiguous = False
        if marks & _AM or (period is not None and period.hour < 12 and not marks):
            hour = 0 if hour == 12 and marks & {"ночи", "түнгі"} else hour
        elif marks or (period is not None and period.hour >= 12):
            hour = hour + 12 if hour < 12 else hour
        elif 1 <= hour <= 11 and ":" not in match.group(0) and not hour_text.startswith("0"):
            ambiguous = True
        cut = match.start(index + 1)  # from the hour on: a day word before it stays for dateparser
        return time(hour % 24, minute), ambiguous, norm[:cut] + " " + norm[match.end() :]
    period = _period(norm)
    return period, False, norm


def _period(norm: str) -> time | None:
    return next((at for pattern, at in _PERIODS if pattern.search(norm)), None)


def _day_month(match: re.Match[str]) -> str:
    """A bare "6.12" or "06.12.2026" in words dateparser reads without doubt ("6 декабря 2026")."""
    day, month, year = int(match.group(1)), int(match.group(2)), match.group(3)
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return match.group(0)
    if year is not None and len(year) == 2:
        year = "20" + year
    return f"{day} {_MONTHS[month - 1]}" + (f" {year}" if year else "")


def _next_day_of_month(number: int, today: date) -> date | None:
    """ "1-го", "15 числа": that day of this month, or of the next when it is past."""
    year, month = today.year, today.month
    for _ in range(2):
        try:
            day = date(year, month, number)
        except ValueError:
            day = None
        if day is not None and day >= today:
            return day
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _day(text: str, now: datetime) -> tuple[date | None, time | None]:
    """The day dateparser finds in the text (and its time, for "через 2 часа"); nothing a year or more away either
    way, and no bare number ("маникюр за 5000")."""
    if not re.search(r"[^\W\d_]{2,}", text):
        return None, None
    local = now.replace(tzinfo=None)
    found = search_dates(
        text,
        languages=LANGUAGES,
        settings={"RELATIVE_BASE": local, "PREFER_DATES_FROM": "future", "DATE_ORDER": "DMY", "RETURN_AS_TIMEZONE_AWARE": False},
    )
    for phrase, moment in found or ():
        if not re.search(r"[^\W\d_]", phrase):
            continue
        day = moment.date()
        if 0 < (day - local.date()).days <= _HORIZON_DAYS and (day.month, day.day) == (local.month, local.day):
            day = local.date()  # "31 декабря" said on the 31st: today, not next year
        if not -_HORIZON_DAYS <= (day - local.date()).days <= _HORIZON_DAYS:  # a past day is kept: check() says so
            continue
        relative_time = re.search(r"час|минут|сағат", phrase) is not None
        return day, moment.time() if relative_time else None
    return None, None
