"""The payload of each kind of outbox item (the outbox.payload JSONB column): one shape per kind, written
where the item is queued and read back by the handler that delivers it (see services/channels/outbox.py)."""

import uuid
from datetime import date
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from app.models import OutboxChannel, OutboxKind


class OutboxPayload(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: ClassVar[OutboxChannel]
    kind: ClassVar[OutboxKind]


class WhatsAppText(OutboxPayload):
    """A text to the customer in parts of at most 4096 characters, sent in order (each part recorded)."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.WHATSAPP
    kind: ClassVar[OutboxKind] = OutboxKind.TEXT

    phone: str | None = None  # the customer's when queued; else the conversation's at delivery
    parts: list[str]


class ManagerText(WhatsAppText):
    """A manager's reply from Telegram, confirmed in the customer's topic as a reply to the manager's message."""

    kind: ClassVar[OutboxKind] = OutboxKind.MANAGER_TEXT

    telegram_message_id: int


class ManagerMedia(OutboxPayload):
    """A manager's file (photo, document, voice note, audio, video) from Telegram to the customer, confirmed
    in the topic like a text reply."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.WHATSAPP
    kind: ClassVar[OutboxKind] = OutboxKind.MANAGER_MEDIA

    phone: str
    telegram_message_id: int
    telegram_kind: str  # photo | document | voice | audio | video | video_note | animation
    file_id: str
    file_size: int | None = None
    mime_type: str | None = None
    filename: str | None = None
    caption: str | None = None


class TopicText(OutboxPayload):
    """A message into the customer's Telegram topic (HTML)."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.TELEGRAM
    kind: ClassVar[OutboxKind] = OutboxKind.TOPIC_TEXT

    text: str
    reply_to: int | None = None


class TopicMedia(OutboxPayload):
    """The customer's file, fetched at delivery time, into their topic."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.TELEGRAM
    kind: ClassVar[OutboxKind] = OutboxKind.TOPIC_MEDIA

    message_id: uuid.UUID


class Card(OutboxPayload):
    """The handover card, rendered from the handover's state at delivery time."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.TELEGRAM
    kind: ClassVar[OutboxKind] = OutboxKind.CARD

    handover_id: uuid.UUID


class BookingCard(OutboxPayload):
    """A booking request's card (summary and the managers' buttons), rendered from its state at delivery time."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.TELEGRAM
    kind: ClassVar[OutboxKind] = OutboxKind.BOOKING_CARD

    booking_id: uuid.UUID


class Digest(OutboxPayload):
    """The client's daily digest (HTML) in the General topic of its Telegram group."""

    channel: ClassVar[OutboxChannel] = OutboxChannel.TELEGRAM
    kind: ClassVar[OutboxKind] = OutboxKind.DIGEST

    day: date  # the client's local day it reports
    text: str


PAYLOAD_TYPES: dict[str, type[OutboxPayload]] = {  # by OutboxKind
    payload.kind: payload for payload in (WhatsAppText, ManagerText, ManagerMedia, TopicText, TopicMedia, Card, BookingCard, Digest)
}
