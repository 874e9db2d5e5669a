"""The ChatFlow webhook payload, accepted flat or wrapped in {"body": {...}}."""

import math
import re
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from app.models.message import MessageType
from app.schemas import strip_nul

_JID_DIGITS = re.compile(r"^\+?(\d{5,20})(?::\d+)?@")
# Bounds on the numbers a delivery carries. A WhatsApp timestamp in seconds or milliseconds; out of range it is
# dropped (a malformed timestamp is not worth losing a message over). A declared size or duration above its
# bound is clamped to it: still refused as too large or too long, never an overflow further on.
_MAX_TIMESTAMP = 10**13
MAX_DECLARED_BYTES = 2**53
MAX_DECLARED_SECONDS = 10**6
GROUP_OR_BROADCAST_SUFFIXES = ("@g.us", "@broadcast", "@newsletter")

# ChatFlow and the WhatsApp libraries behind it name the same kinds in several ways.
_TYPE_ALIASES: dict[str, MessageType] = {
    "text": MessageType.TEXT,
    "chat": MessageType.TEXT,
    "conversation": MessageType.TEXT,
    "extendedtextmessage": MessageType.TEXT,
    "audio": MessageType.AUDIO,
    "ptt": MessageType.AUDIO,
    "voice": MessageType.AUDIO,
    "audiomessage": MessageType.AUDIO,
    "image": MessageType.IMAGE,
    "imagemessage": MessageType.IMAGE,
    "video": MessageType.VIDEO,
    "videomessage": MessageType.VIDEO,
    "document": MessageType.DOCUMENT,
    "documentmessage": MessageType.DOCUMENT,
    "documentwithcaptionmessage": MessageType.DOCUMENT,
    "file": MessageType.DOCUMENT,
    "sticker": MessageType.STICKER,
    "stickermessage": MessageType.STICKER,
    "location": MessageType.LOCATION,
    "locationmessage": MessageType.LOCATION,
    "livelocationmessage": MessageType.LOCATION,
    "contact": MessageType.CONTACT,
    "vcard": MessageType.CONTACT,
    "contactmessage": MessageType.CONTACT,
    "contactsarraymessage": MessageType.CONTACT,
    "reaction": MessageType.REACTION,
    "reactionmessage": MessageType.REACTION,
}


class ChatFlowMetadata(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message_id: str = Field(validation_alias=AliasChoices("messageId", "message_id", "id"), min_length=1, max_length=200)
    remote_jid: str = Field(validation_alias=AliasChoices("remoteJid", "remote_jid", "jid"), min_length=3, max_length=100)
    sender: str | None = Field(default=None, max_length=200)
    timestamp: int | None = None
    instance_id: str | None = Field(default=None, validation_alias=AliasChoices("instanceId", "instance_id"))
    from_me: bool = Field(default=False, validation_alias=AliasChoices("fromMe", "from_me"))

    @field_validator("sender", mode="before")
    @classmethod
    def _sender_text(cls, value: Any) -> Any:
        return str(value)[:200] if value is not None and not isinstance(value, str) else value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _lenient_timestamp(cls, value: Any) -> Any:
        # A malformed timestamp is not worth losing a customer's message over.
        try:
            number = int(value) if value not in (None, "") and not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):
            return None
        return number if number is not None and 0 <= number < _MAX_TIMESTAMP else None


class ChatFlowMedia(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str | None = None
    mimetype: str | None = None
    fileName: str | None = None
    caption: str | None = None
    base64: str | None = None
    ptt: bool | None = None
    seconds: float | None = None
    size: int | None = None

    @field_validator("seconds", "size", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        bound = MAX_DECLARED_SECONDS if info.field_name == "seconds" else MAX_DECLARED_BYTES
        try:
            number = float(value) if value not in (None, "") and not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):
            return None
        if number is None or not math.isfinite(number) or number < 0:
            return None
        number = min(number, bound)
        return number if info.field_name == "seconds" else int(number)


class ChatFlowWebhook(BaseModel):
    """One customer (or business) message as ChatFlow delivers it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    message_type: MessageType = Field(default=MessageType.TEXT, validation_alias=AliasChoices("messageType", "message_type", "type"))
    message: str = ""
    metadata: ChatFlowMetadata
    media: ChatFlowMedia | None = Field(default=None, validation_alias=AliasChoices("mediaData", "media_data", "media"))
    from_me_top: bool = Field(default=False, validation_alias=AliasChoices("fromMe", "from_me"))

    @model_validator(mode="before")
    @classmethod
    def _unwrap_body(cls, data: Any) -> Any:
        data = strip_nul(data)
        if isinstance(data, dict) and "metadata" not in data and isinstance(data.get("body"), dict):
            return data["body"]
        return data

    @field_validator("message", mode="before")
    @classmethod
    def _message_text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("message_type", mode="before")
    @classmethod
    def _normalise_type(cls, value: Any) -> MessageType:
        key = str(value or "text").strip().lower().replace("_", "")
        return _TYPE_ALIASES.get(key, MessageType.OTHER)

    @model_validator(mode="after")
    def _has_content(self) -> "ChatFlowWebhook":
        if self.message_type == MessageType.TEXT and not self.message.strip():
            raise ValueError("message is empty: a text message needs non-blank 'message'")
        return self

    @property
    def from_me(self) -> bool:
        return self.metadata.from_me or self.from_me_top

    @property
    def is_group_or_broadcast(self) -> bool:
        jid = self.metadata.remote_jid.lower()
        return jid.endswith(GROUP_OR_BROADCAST_SUFFIXES) or jid.startswith("status@")

    @property
    def phone(self) -> str | None:
        """The customer's phone digits from the JID, or None when the JID carries no number."""
        match = _JID_DIGITS.match(self.metadata.remote_jid)
        return match.group(1) if match else None

    @property
    def text(self) -> str:
        """What the customer wrote: the message, or the caption of a media message."""
        if self.message.strip():
            return self.message
        return (self.media.caption or "") if self.media else ""


class IngestStatus(StrEnum):
    OK = "ok"  # stored; its turn is scheduled
    DUPLICATE = "duplicate"  # delivered before: nothing done
    IGNORED = "ignored"  # stored or dropped, never answered (see IgnoreReason)


class IgnoreReason(StrEnum):
    GROUP_OR_BROADCAST = "group_or_broadcast"
    ECHO = "echo"  # the gateway echoing our own send
    FROM_ME = "from_me"  # staff writing from the business phone: stored, the bot steps back


class WebhookAck(BaseModel):
    """The webhook's answer to ChatFlow."""

    status: IngestStatus = IngestStatus.OK
    reason: IgnoreReason | None = None
