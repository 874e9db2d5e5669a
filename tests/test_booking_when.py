"""When a customer wants to come: 70+ phrases in Russian, Kazakh and Latin-typed Russian, resolved for a fixed
"now" in the client's time zone (a year boundary and a month boundary), and the business hours' say."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.schemas.client import ClientSettings
from app.services import hours
from app.services.booking import when

ALMATY = ZoneInfo("Asia/Almaty")
SALON = hours.schedule_of(ClientSettings(hours={day: ["10:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat")}))
NOW = {
    "A": datetime(2026, 12, 31, 10, 30, tzinfo=ALMATY),  # Thursday, the last day of the year
    "B": datetime(2027, 1, 30, 16, 0, tzinfo=ALMATY),  # Saturday, two days before February
}

TABLE = [
    ("A", "завтра в 15:00", "2027-01-01 15:00"),
    ("A", "завтра в 15", "2027-01-01 15:00"),
    ("A", "можно на завтра к 15?", "2027-01-01 15:00"),
    ("A", "завтра после обеда", "2027-01-01 14:00"),
    ("A", "завтра до обеда", "2027-01-01 11:00"),
    ("A", "в субботу в 15:00", "2027-01-02 15:00"),
    ("A", "в субботу в 3", "2027-01-02 15:00"),
    ("A", "через неделю в 12", "2027-01-07 12:00"),
    ("A", "через 3 дня в 11:30", "2027-01-03 11:30"),
    ("A", "послезавтра в 12:30", "2027-01-02 12:30"),
    ("A", "сегодня в 18:00", "2026-12-31 18:00"),
    ("A", "сегодня вечером", "2026-12-31 18:00"),
    ("A", "в 3", "2026-12-31 15:00"),
    ("A", "в 3 часа дня", "2026-12-31 15:00"),
    ("A", "в 7 вечера", "2026-12-31 19:00"),
    ("A", "в 10 утра", "2027-01-01 10:00"),
    ("A", "1 января в 14:00", "2027-01-01 14:00"),
    ("A", "1-го в 12", "2027-01-01 12:00"),
    ("A", "6.01 в 11", "2027-01-06 11:00"),
    ("A", "06.01.2027 в 16:00", "2027-01-06 16:00"),
    ("A", "31 декабря в 17", "2026-12-31 17:00"),
    ("A", "в понедельник утром", "2027-01-04 10:00"),
    ("A", "в пятницу вечером", "2027-01-01 18:00"),
    ("A", "в среду в 11", "2027-01-06 11:00"),
    ("A", "завтра 15", "2027-01-01 15:00"),
    ("A", "к 16.30", "2026-12-31 16:30"),
    ("A", "на 16-00", "2026-12-31 16:00"),
    ("A", "запишите на маникюр завтра в 15, Айгерим", "2027-01-01 15:00"),
    ("A", "на 3 человека завтра в 12", "2027-01-01 12:00"),
    ("A", "через 2 часа", "2026-12-31 12:30"),
    ("A", "первого января в 13:00", "2027-01-01 13:00"),
    ("A", "в следующий вторник в 17:00", "2027-01-05 17:00"),
    ("A", "5 января к 10", "2027-01-05 10:00"),
    ("A", "в четверг в полдень", "2027-01-07 12:00"),
    ("A", "через две недели в 16", "2027-01-14 16:00"),
    ("A", "zavtra v 15", "2027-01-01 15:00"),
    ("A", "zapishite pozhaluysta na zavtra v 3", "2027-01-01 15:00"),
    ("A", "v subbotu v 14:00", "2027-01-02 14:00"),
    ("A", "ертең сағат 3-те", "2027-01-01 15:00"),
    ("A", "ертең сағат 15:00-де", "2027-01-01 15:00"),
    ("A", "ертеңге сағат 11-ге", "2027-01-01 11:00"),
    ("A", "ертең түстен кейін", "2027-01-01 14:00"),
    ("A", "сенбіде сағат 11-де", "2027-01-02 11:00"),
    ("A", "сенбі күні сағат 2-де", "2027-01-02 14:00"),
    ("A", "бүрсігүні сағат 14:00", "2027-01-02 14:00"),
    ("A", "бүгін сағат 5-те", "2026-12-31 17:00"),
    ("A", "бүгін кешке", "2026-12-31 18:00"),
    ("A", "бір аптадан кейін сағат 12-де", "2027-01-07 12:00"),
    ("A", "2 күннен кейін сағат 10-да", "2027-01-02 10:00"),
    ("A", "дүйсенбі күні сағат 4-те", "2027-01-04 16:00"),
    ("A", "жұмада кешкі 6-да", "2027-01-01 18:00"),
    ("A", "3 қаңтарда сағат 11:00", "2027-01-03 11:00"),
    ("A", "5 қаңтар сағат 16:30", "2027-01-05 16:30"),
    ("A", "сейсенбіде таңғы 10-да", "2027-01-05 10:00"),
    ("A", "сәрсенбіге 12:00-ге", "2027-01-06 12:00"),
    ("A", "бейсенбі сағат 13:00", "2027-01-07 13:00"),
    ("A", "ертең таңертең", "2027-01-01 10:00"),
    ("B", "завтра в 15", "2027-01-31 15:00"),
    ("B", "послезавтра в 11", "2027-02-01 11:00"),
    ("B", "через неделю в 10:00", "2027-02-06 10:00"),
    ("B", "1 февраля в 12", "2027-02-01 12:00"),
    ("B", "в понедельник в 18", "2027-02-01 18:00"),
    ("B", "1-го числа в 15", "2027-02-01 15:00"),
    ("B", "через 3 дня в 14", "2027-02-02 14:00"),
    ("B", "в 5", "2027-01-30 17:00"),
    ("B", "сегодня в 19:30", "2027-01-30 19:30"),
    ("B", "28 февраля в 11", "2027-02-28 11:00"),
    ("B", "ертең сағат 3-те", "2027-01-31 15:00"),
    ("B", "бүрсігүні сағат 11:00", "2027-02-01 11:00"),
    ("B", "дүйсенбіде сағат 5-те", "2027-02-01 17:00"),
    ("B", "2 күннен кейін сағат 12:00", "2027-02-01 12:00"),
    ("B", "1 ақпанда сағат 14:00", "2027-02-01 14:00"),
    ("B", "келесі аптада сейсенбі сағат 10-да", "2027-02-02 10:00"),
]


@pytest.mark.parametrize(("now", "phrase", "expected"), TABLE, ids=[f"{n}-{p}" for n, p, _ in TABLE])
def test_a_phrase_resolves_to_the_moment_a_person_would_read(now, phrase, expected):
    said = when.read(phrase, now=NOW[now])
    moment = when.resolve(said, now=NOW[now], schedule=SALON)
    assert moment is not None, said
    assert moment.tzinfo == ALMATY
    assert moment.strftime("%Y-%m-%d %H:%M") == expected


def test_the_table_is_large_and_covers_both_languages():
    kazakh = [p for _, p, _ in TABLE if any(ch in p for ch in "әғқңөұүһі") or "сағат" in p]
    assert len(TABLE) >= 60 and len(kazakh) >= 20


@pytest.mark.parametrize(
    ("phrase", "day", "at"),
    [
        ("ертеңге жазылайын", "2027-01-01", None),
        ("через неделю", "2027-01-07", None),
        ("в субботу", "2027-01-02", None),
        ("сенбіде", "2027-01-02", None),
        ("в 15:00", None, "15:00"),
        ("сағат 4-те", None, "04:00"),
    ],
)
def test_a_day_alone_or_a_time_alone_is_kept_apart(phrase, day, at):
    said = when.read(phrase, now=NOW["A"])
    assert (said.day and said.day.isoformat(), said.at and said.at.strftime("%H:%M")) == (day, at)


@pytest.mark.parametrize("phrase", ["маникюр за 5000", "мне 25 лет", "запишите на маникюр", "на 3 человека", "Айгерим", "сколько стоит?"])
def test_words_without_a_when_give_nothing(phrase):
    assert not when.read(phrase, now=NOW["A"]).anything


def test_a_time_alone_is_the_next_time_it_comes_and_a_day_known_from_before_is_kept():
    assert when.resolve(when.read("в 10 утра", now=NOW["A"]), now=NOW["A"], schedule=SALON) == datetime(2027, 1, 1, 10, tzinfo=ALMATY)
    known = datetime(2027, 1, 5).date()
    moment = when.resolve(when.read("в 4", now=NOW["A"]), now=NOW["A"], schedule=SALON, day=known)
    assert moment == datetime(2027, 1, 5, 16, tzinfo=ALMATY)


def test_an_ambiguous_hour_is_the_one_the_business_is_open_at():
    night_club = hours.schedule_of(ClientSettings(hours={day: ["22:00-06:00"] for day in ("fri", "sat")}))
    said = when.read("в субботу в 3", now=NOW["A"])
    assert when.resolve(said, now=NOW["A"], schedule=night_club) == datetime(2027, 1, 2, 3, tzinfo=ALMATY)
    assert when.resolve(said, now=NOW["A"], schedule=SALON) == datetime(2027, 1, 2, 15, tzinfo=ALMATY)


def test_a_past_or_closed_moment_is_refused():
    now = NOW["A"]
    assert when.check(datetime(2026, 12, 31, 9, tzinfo=ALMATY), now=now, schedule=SALON) == when.Problem.PAST
    assert when.check(datetime(2027, 1, 3, 12, tzinfo=ALMATY), now=now, schedule=SALON) == when.Problem.CLOSED  # Sunday
    assert when.check(datetime(2027, 1, 2, 20, tzinfo=ALMATY), now=now, schedule=SALON) == when.Problem.CLOSED  # at closing
    assert when.check(datetime(2027, 1, 2, 19, 30, tzinfo=ALMATY), now=now, schedule=SALON) is None


def test_the_client_time_zone_decides_what_tomorrow_is():
    utc_now = datetime(2026, 12, 31, 20, 30, tzinfo=ZoneInfo("UTC"))  # 1 January 01:30 in Almaty, 31 December 23:30 in Moscow
    for zone, expected in (("Asia/Almaty", datetime(2027, 1, 2, 12)), ("Europe/Moscow", datetime(2027, 1, 1, 12))):
        schedule = hours.schedule_of(ClientSettings(timezone=zone))
        moment = when.resolve(when.read("завтра в 12", now=utc_now.astimezone(schedule.tz)), now=utc_now, schedule=schedule)
        assert moment == expected.replace(tzinfo=schedule.tz)
