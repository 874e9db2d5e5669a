import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, check_in, now_column, uuid_pk

MESSAGE_ROLES = ("user", "assistant", "manager", "system")
MESSAGE_TYPES = ("text", "audio", "image", "video", "document", "sticker", "location", "contact", "reaction", "other")
# Inbound: received -> processing -> processed | ignored | failed. Outbound: pending -> sent | failed.
MESSAGE_STATUSES = ("received", "processing", "processed", "ignored", "failed", "pending", "sent")


class Message(Base):
    """One message in a conversation, from the customer, the bot, a manager or the system."""

    __tablename__ = "messages"
    __table_args__ = (
        # The real guard against a gateway delivering the same message twice.
        UniqueConstraint("client_id", "external_id"),
        CheckConstraint(check_in("role", MESSAGE_ROLES), name="role"),
        CheckConstraint(check_in("type", MESSAGE_TYPES), name="type"),
        CheckConstraint(check_in("status", MESSAGE_STATUSES), name="status"),
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_unprocessed", "conversation_id", postgresql_where=text("status IN ('received', 'processing')")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    content: Mapped[str] = mapped_column(Text, default="", server_default="")
    external_id: Mapped[str | None] = mapped_column(String(200))
    intent: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    turn_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = now_column()
