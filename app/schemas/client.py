"""Per-client settings kept in clients.settings (JSONB), with the defaults every client starts from."""

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

_YEAR_MINUTES = 366 * 24 * 60  # no wait or mute is longer: a bigger number would overflow a date further on


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    buffer_wait_seconds: float | None = Field(default=None, ge=0, le=120, description="None: the global BUFFER_WAIT_SECONDS")
    buffer_max_wait_seconds: float | None = Field(default=None, ge=0, le=300)
    mute_minutes_first: int = Field(default=30, ge=1, le=_YEAR_MINUTES)
    mute_minutes_repeat: int = Field(default=24 * 60, ge=1, le=_YEAR_MINUTES)
    reminder_minutes: int = Field(default=30, ge=1, le=_YEAR_MINUTES)
    urgent_reminder_minutes: int = Field(default=60, ge=1, le=_YEAR_MINUTES)
    auto_close_minutes: int = Field(default=120, ge=1, le=_YEAR_MINUTES)
    escalation_cooldown_minutes: int = Field(default=10, ge=0, le=_YEAR_MINUTES)
    escalate_on_no_knowledge: bool = True
    announce_manager: bool = False
    owner_username: str | None = Field(default=None, max_length=64)
    staff_mute_minutes: int = Field(default=60, ge=1, le=_YEAR_MINUTES)
    # Telegram user ids or @usernames allowed to press a card's buttons and reply to customers; empty: any
    # member of the client's group
    managers: list[str] = Field(default_factory=list, max_length=200)
    # Days a customer's messages (text, transcripts, media metadata) are kept
    retention_days: int = Field(default=180, ge=1, le=3650)
    # This client's daily budgets; None: the deployment's LIMIT_MODEL_CALLS_PER_DAY / LIMIT_TRANSCRIPTION_SECONDS_PER_DAY
    limit_model_calls_per_day: int | None = Field(default=None, ge=0, le=10**9)
    limit_transcription_seconds_per_day: int | None = Field(default=None, ge=0, le=10**9)

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
