"""The parts of a Telegram Update this service reads; everything else is allowed and ignored."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas import BigInt, strip_nul


class TgUser(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: BigInt
    is_bot: bool = False
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None

    @property
    def display_name(self) -> str:
        name = " ".join(part for part in (self.first_name, self.last_name) if part).strip()
        return name or (f"@{self.username}" if self.username else str(self.id))


class TgChat(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: BigInt
    type: str = ""


class TgMessage(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message_id: BigInt
    chat: TgChat
    from_user: TgUser | None = Field(default=None, alias="from")
    message_thread_id: BigInt | None = None
    is_topic_message: bool = False
    text: str | None = None
    caption: str | None = None


class TgCallbackQuery(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    from_user: TgUser = Field(alias="from")
    message: TgMessage | None = None
    data: str | None = Field(default=None, max_length=64)


class TgUpdate(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return strip_nul(data)

    update_id: BigInt
    message: TgMessage | None = None
    callback_query: TgCallbackQuery | None = None
