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


class TgFile(BaseModel):
    """A photo size, document, voice note, audio, video, sticker... as far as sending it on goes."""

    model_config = ConfigDict(extra="allow")

    file_id: str
    file_size: int | None = None
    mime_type: str | None = None
    file_name: str | None = None


# What a manager may send in a topic and its file; the first present wins (a photo is a list of sizes).
FILE_KINDS = ("photo", "document", "voice", "audio", "video", "video_note", "animation", "sticker")
# Kinds nothing can be sent on for (a location, a poll, ...): the manager is told.
OTHER_KINDS = ("location", "venue", "contact", "poll", "dice", "game", "story")


class TgMessage(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message_id: BigInt
    chat: TgChat
    from_user: TgUser | None = Field(default=None, alias="from")
    message_thread_id: BigInt | None = None
    is_topic_message: bool = False
    text: str | None = None
    caption: str | None = None
    photo: list[TgFile] | None = None
    document: TgFile | None = None
    voice: TgFile | None = None
    audio: TgFile | None = None
    video: TgFile | None = None
    video_note: TgFile | None = None
    animation: TgFile | None = None
    sticker: TgFile | None = None

    @property
    def file(self) -> tuple[str, TgFile] | None:
        """(kind, file) of the message's attachment; a photo's largest size."""
        for kind in FILE_KINDS:
            value = getattr(self, kind)
            if isinstance(value, list):
                if value:
                    return kind, max(value, key=lambda size: size.file_size or 0)
            elif value is not None:
                return kind, value
        return None

    @property
    def other_kind(self) -> str | None:
        """A kind of message that carries neither text nor a file (a location, a poll, ...)."""
        return next((kind for kind in OTHER_KINDS if (self.model_extra or {}).get(kind) is not None), None)


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
