import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class MessageRole(StrEnum):
    USER = "user"  # the customer
    ASSISTANT = "assistant"  # the bot
    MANAGER = "manager"  # a manager (from Telegram) or staff writing from the business phone
    SYSTEM = "system"  # a notice to the customer, e.g. which manager answers now


class MessageType(StrEnum):
    TEXT = "text"
    AUDIO = "audio"
    IMAGE = "image"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"
    REACTION = "reaction"
    OTHER = "other"


class MessageStatus(StrEnum):
    """Inbound: received -> processing -> processed | ignored | failed. Outbound: pending -> sent | failed."""

    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    PENDING = "pending"
    SENT = "sent"


class Message(Base):
    """One message in a conversation, from the customer, the bot, a manager or the system."""

    __tablename__ = "messages"
    __table_args__ = (
        # The real guard against a gateway delivering the same message twice.
        UniqueConstraint("client_id", "external_id"),
        CheckConstraint(check_in("role", MessageRole), name="role"),
        CheckConstraint(check_in("type", MessageType), name="type"),
        CheckConstraint(check_in("status", MessageStatus), name="status"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_client_created", "client_id", "created_at"),  # retention
        Index("ix_messages_unprocessed", "conversation_id", postgresql_where=text("status IN ('received', 'processing')")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[MessageRole] = mapped_column(EnumText(MessageRole, 16))
    type: Mapped[MessageType] = mapped_column(EnumText(MessageType, 16), default=MessageType.TEXT, server_default="text")
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    external_id: Mapped[str | None] = mapped_column(String(200))
    intent: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[MessageStatus] = mapped_column(EnumText(MessageStatus, 16))
    turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = now_column()
