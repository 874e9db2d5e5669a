import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class OutboxChannel(StrEnum):
    WHATSAPP = "whatsapp"
    TELEGRAM = "telegram"


class OutboxStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # claimed by a sender (lease_owner, lease_version) until locked_until, renewed while it sends
    SENT = "sent"
    UNCERTAIN = "uncertain"  # the request may have reached the gateway, which gave no answer: not repeated blindly
    FAILED = "failed"  # given up on
    CANCELLED = "cancelled"


class OutboxKind(StrEnum):
    """What an item delivers; each kind has one payload shape (schemas/outbox.py) and one handler."""

    TEXT = "text"  # WhatsApp text to the customer
    MANAGER_TEXT = "manager_text"  # a manager's reply to the customer, confirmed in the Telegram topic
    MANAGER_MEDIA = "manager_media"  # a manager's file to the customer (fetched from Telegram, served to the gateway)
    TOPIC_TEXT = "topic_text"  # a message into the customer's Telegram topic
    TOPIC_MEDIA = "topic_media"  # the customer's file into the topic
    CARD = "card"  # the handover card in the topic, rendered from the handover's state
    BOOKING_CARD = "booking_card"  # a booking request's card in the topic, rendered from its state
    DIGEST = "digest"  # the client's daily digest in the group's General topic


class OutboxItem(Base):
    """A message to deliver to a messenger, written in the same transaction as the decision to send it."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(check_in("channel", OutboxChannel), name="channel"),
        CheckConstraint(check_in("status", OutboxStatus), name="status"),
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("status IN ('pending', 'sending')")),
        Index(
            "ix_outbox_finished", "created_at", postgresql_where=text("status IN ('sent', 'failed', 'cancelled', 'uncertain')")
        ),  # retention
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("messages.id", ondelete="SET NULL"))
    channel: Mapped[OutboxChannel] = mapped_column(EnumText(OutboxChannel, 16))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Makes enqueueing idempotent: the same logical send is never written twice.
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[OutboxStatus] = mapped_column(EnumText(OutboxStatus, 16), default=OutboxStatus.PENDING, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # +1 per claim: the fencing token
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = now_column()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
