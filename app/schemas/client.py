"""Per-client settings kept in clients.settings (JSONB), with the defaults every client starts from."""

import logging
import re
import zoneinfo
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

_YEAR_MINUTES = 366 * 24 * 60  # no wait or mute is longer: a bigger number would overflow a date further on

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INTERVAL = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)-([01]?\d|2[0-4]):([0-5]\d)$")
# The sensitive topics every client starts with (services/conversation/sensitive.py holds their words).
DEFAULT_SENSITIVE_TOPICS = ("medical", "payment", "refund", "appointment_change", "legal", "complaint")


class NoKnowledgePolicy(StrEnum):
    """What the bot does when the knowledge base has nothing for a question."""

    ESCALATE = "escalate"  # call a manager at once
    CLARIFY_THEN_OFFER = "clarify_then_offer"  # ask one clarifying question, then offer a manager (yes/no)


class BookingRequirement(StrEnum):
    """What a booking request must have before it goes to the managers (the phone is always known)."""

    SERVICE = "service"
    TIME = "time"
    NAME = "name"


# The texts of the booking conversation a client may reword (`--set booking_texts='{"ask_time": "..."}'`); the
# defaults and their {placeholders} are in services/booking/texts.py.
BOOKING_TEXT_KEYS = (
    "ask_service",
    "ask_time",
    "ask_time_on_day",
    "time_unclear",
    "time_past",
    "time_closed",
    "ask_name",
    "ask_name_proposed",
    "submitted",
    "confirmed",
    "declined",
    "proposal",
    "proposal_declined",
    "cancelled",
)


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    buffer_wait_seconds: float | None = Field(default=None, ge=0, le=120, description="None: the global BUFFER_WAIT_SECONDS")
    buffer_max_wait_seconds: float | None = Field(default=None, ge=0, le=300)
    mute_minutes_first: int = Field(default=30, ge=1, le=_YEAR_MINUTES)
    mute_minutes_repeat: int = Field(default=24 * 60, ge=1, le=_YEAR_MINUTES)
    # A pending handover (nobody took it), in working minutes since it opened
    reminder_minutes: int = Field(default=30, ge=1, le=_YEAR_MINUTES)
    urgent_reminder_minutes: int = Field(default=60, ge=1, le=_YEAR_MINUTES)
    auto_close_minutes: int = Field(default=120, ge=1, le=_YEAR_MINUTES)
    # A taken handover: the customer's last message unanswered this long (working minutes) reminds the
    # assignee, then tags the owner; this long without a message from either side gives the bot back
    active_reminder_minutes: int = Field(default=30, ge=1, le=_YEAR_MINUTES)
    active_urgent_minutes: int = Field(default=60, ge=1, le=_YEAR_MINUTES)
    active_auto_close_minutes: int = Field(default=720, ge=1, le=_YEAR_MINUTES)
    # While nobody has answered yet, a customer who writes again hears this at most once per this many minutes
    waiting_notice_minutes: int = Field(default=10, ge=1, le=_YEAR_MINUTES)
    waiting_notice_text: str = Field(default="Менеджер скоро ответит.", min_length=1, max_length=500)
    escalation_cooldown_minutes: int = Field(default=10, ge=0, le=_YEAR_MINUTES)
    no_knowledge_policy: NoKnowledgePolicy = NoKnowledgePolicy.CLARIFY_THEN_OFFER
    sensitive_topics: list[str] = Field(default_factory=lambda: list(DEFAULT_SENSITIVE_TOPICS))
    sensitive_keywords: list[str] = Field(
        default_factory=list, max_length=500, description="extra words or stems (ending in *) that call a manager"
    )
    announce_manager: bool = False
    owner_username: str | None = Field(default=None, max_length=64)
    staff_mute_minutes: int = Field(default=60, ge=1, le=_YEAR_MINUTES)
    # Business hours: {"mon": ["10:00-20:00"], ...}; a day not listed is a day off; empty = always open
    timezone: str = "Asia/Almaty"
    hours: dict[str, list[str]] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list, max_length=1000)
    # Bookings in the chat: the bot collects service, time and name and a manager confirms in Telegram
    booking_enabled: bool = False
    booking_required: list[BookingRequirement] = Field(default_factory=lambda: list(BookingRequirement))
    booking_texts: dict[str, str] = Field(default_factory=dict)
    # Telegram user ids or @usernames allowed to press a card's buttons and reply to customers; empty: any
    # member of the client's group
    managers: list[str] = Field(default_factory=list, max_length=200)
    # The daily digest in the group's General topic, at this local time (the `timezone` above), about the day before
    digest_enabled: bool = True
    digest_time: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, local")
    # Days a customer's messages (text, transcripts, media metadata) are kept
    retention_days: int = Field(default=180, ge=1, le=3650)
    # This client's daily budgets; None: the deployment's LIMIT_MODEL_CALLS_PER_DAY / LIMIT_TRANSCRIPTION_SECONDS_PER_DAY
    limit_model_calls_per_day: int | None = Field(default=None, ge=0, le=10**9)
    limit_transcription_seconds_per_day: int | None = Field(default=None, ge=0, le=10**9)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone '{value}' (e.g. Asia/Almaty)") from exc
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, intervals in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown day '{day}': use {', '.join(WEEKDAYS)}")
            for interval in intervals:
                match = _INTERVAL.match(interval)
                if match is None or match.group(1, 2) == match.group(3, 4):
                    raise ValueError(f"'{interval}' is not an interval like 10:00-20:00")
        return value

    @field_validator("booking_texts")
    @classmethod
    def _known_booking_texts(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [key for key in value if key not in BOOKING_TEXT_KEYS]
        if unknown:
            raise ValueError(f"unknown booking text(s) {', '.join(unknown)}: use {', '.join(BOOKING_TEXT_KEYS)}")
        empty = [key for key, text in value.items() if not text.strip()]
        if empty:
            raise ValueError(f"empty booking text(s) {', '.join(empty)}")
        return value

    @field_validator("booking_required")
    @classmethod
    def _time_is_required(cls, value: list[BookingRequirement]) -> list[BookingRequirement]:
        if BookingRequirement.TIME not in value:
            raise ValueError("a booking always needs a time: keep 'time' in booking_required")
        return value

    @field_validator("sensitive_topics")
    @classmethod
    def _known_topics(cls, value: list[str]) -> list[str]:
        unknown = [topic for topic in value if topic not in DEFAULT_SENSITIVE_TOPICS]
        if unknown:
            raise ValueError(f"unknown sensitive topic(s) {', '.join(unknown)}: use {', '.join(DEFAULT_SENSITIVE_TOPICS)}")
        return value

    @classmethod
    def from_stored(cls, raw: dict[str, Any] | None) -> "ClientSettings":
        """A client's stored settings; a value out of its bounds (stored before the bound existed) is logged
        and its default used instead: a client must never stop receiving messages over a setting."""
        try:
            return cls.model_validate(raw or {})
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            logger.error("client.settings_invalid", extra={"keys": sorted(bad)})
            return cls.model_validate({key: value for key, value in (raw or {}).items() if key not in bad})

    @field_validator("managers", mode="before")
    @classmethod
    def _manager_list(cls, value: object) -> object:
        if isinstance(value, (str, int)):
            value = [part for part in str(value).replace(",", " ").split() if part]
        if isinstance(value, list):
            return [str(item).strip().lower() for item in value if str(item).strip()]
        return value

    def is_manager(self, user_id: int, username: str | None) -> bool:
        """Whether this Telegram user may act as a manager (everyone when no list is set)."""
        if not self.managers:
            return True
        return (
            str(user_id) in self.managers
            or (username is not None and f"@{username.lower()}" in self.managers)
            or (username is not None and username.lower() in self.managers)
        )


def interval_minutes(interval: str) -> tuple[int, int]:
    """'10:00-20:00' as minutes from midnight (600, 1200); an end before the start runs past midnight."""
    match = _INTERVAL.match(interval)
    if match is None:
        raise ValueError(f"'{interval}' is not an interval like 10:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return min(h1 * 60 + m1, 1440), min(h2 * 60 + m2, 1440)
