"""Business hours on their own: open or not, the next opening, working minutes between two moments."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from app.schemas.client import ClientSettings
from app.services import hours

ALMATY = ZoneInfo("Asia/Almaty")
SALON = hours.schedule_of(
    ClientSettings(
        hours={d: ["10:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri")} | {"sat": ["11:00-17:00"]},
        holidays=[date(2026, 3, 9)],
    )
)
BAR = hours.schedule_of(ClientSettings(hours={"fri": ["18:00-02:00"]}))


def at(day: int, hh: int, mm: int = 0, month: int = 3) -> datetime:
    # March 2026: the 2nd is a Monday, the 7th a Saturday, the 8th a Sunday, the 9th a holiday here.
    return datetime(2026, month, day, hh, mm, tzinfo=ALMATY)


def test_open_inside_the_weekly_schedule_and_closed_outside_it_on_days_off_and_holidays():
    assert hours.is_open(SALON, at(3, 10))
    assert hours.is_open(SALON, at(3, 19, 59))
    assert not hours.is_open(SALON, at(3, 20))
    assert not hours.is_open(SALON, at(3, 9, 59))
    assert hours.is_open(SALON, at(7, 12)) and not hours.is_open(SALON, at(7, 17, 30))  # Saturday's short day
    assert not hours.is_open(SALON, at(8, 12))  # Sunday
    assert not hours.is_open(SALON, at(9, 12))  # a holiday on a Monday


def test_the_moment_is_read_in_the_clients_time_zone():
    utc = datetime(2026, 3, 3, 4, 30, tzinfo=ZoneInfo("UTC"))  # 09:30 in Almaty (UTC+5)
    assert not hours.is_open(SALON, utc)
    assert hours.is_open(SALON, utc + timedelta(minutes=30))


def test_the_next_opening_skips_nights_weekends_and_holidays():
    assert hours.next_open(SALON, at(3, 12)) == at(3, 12)  # open now
    assert hours.next_open(SALON, at(3, 21)) == at(4, 10)  # tomorrow morning
    assert hours.next_open(SALON, at(7, 18)) == at(10, 10)  # Saturday evening: Sunday off, Monday a holiday
    assert hours.next_open(hours.schedule_of(ClientSettings(hours={"mon": []})), at(3, 12)) is None  # never


def test_working_minutes_count_only_time_inside_the_schedule():
    assert hours.working_minutes(SALON, at(3, 11), at(3, 11, 30)) == 30
    assert hours.working_minutes(SALON, at(3, 19, 50), at(4, 10, 20)) == 30  # the night does not count
    assert hours.working_minutes(SALON, at(7, 16, 50), at(10, 10, 20)) == 30  # nor the weekend and the holiday
    assert hours.working_minutes(SALON, at(8, 9), at(8, 23)) == 0
    assert hours.working_minutes(SALON, at(4, 10), at(3, 10)) == 0


def test_an_interval_past_midnight_belongs_to_the_day_it_starts():
    assert hours.is_open(BAR, at(6, 23)) and hours.is_open(BAR, at(7, 1, 30))  # Friday night into Saturday
    assert not hours.is_open(BAR, at(7, 2)) and not hours.is_open(BAR, at(5, 23))
    assert hours.working_minutes(BAR, at(6, 17), at(7, 3)) == 8 * 60
    assert hours.closes_at(BAR, at(6, 23)) == at(7, 2)


def test_without_a_schedule_the_business_is_always_open():
    always = hours.schedule_of(ClientSettings())
    assert hours.is_open(always, at(8, 3))
    assert hours.working_minutes(always, at(8, 3), at(8, 4)) == 60
    assert hours.closes_at(always, at(8, 3)) is None


def test_the_week_reads_as_one_line():
    assert hours.describe_week(SALON) == "пн–пт 10:00–20:00; сб 11:00–17:00; вс выходной"
    assert hours.describe_week(hours.schedule_of(ClientSettings())) == "круглосуточно, без выходных"


@pytest.mark.parametrize(
    "bad",
    [
        {"timezone": "Mars/Olympus"},
        {"hours": {"monday": ["10:00-20:00"]}},
        {"hours": {"mon": ["10-20"]}},
        {"hours": {"mon": ["10:00-10:00"]}},
    ],
)
def test_a_schedule_that_cannot_be_read_is_refused(bad):
    with pytest.raises(ValidationError):
        ClientSettings.model_validate(bad)
