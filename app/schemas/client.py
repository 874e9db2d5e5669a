"""Per-client settings kept in clients.settings (JSONB), with the defaults every client starts from."""

from pydantic import BaseModel, ConfigDict, Field


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    buffer_wait_seconds: float | None = Field(default=None, ge=0, le=120, description="None: the global BUFFER_WAIT_SECONDS")
    buffer_max_wait_seconds: float | None = Field(default=None, ge=0, le=300)
    mute_minutes_first: int = Field(default=30, ge=1)
    mute_minutes_repeat: int = Field(default=24 * 60, ge=1)
    reminder_minutes: int = Field(default=30, ge=1)
    urgent_reminder_minutes: int = Field(default=60, ge=1)
    auto_close_minutes: int = Field(default=120, ge=1)
    escalation_cooldown_minutes: int = Field(default=10, ge=0)
    escalate_on_no_knowledge: bool = True
    announce_manager: bool = False
    owner_username: str | None = None
    staff_mute_minutes: int = Field(default=60, ge=1)
