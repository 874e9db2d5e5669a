import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement, SQLCoreOperations

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class HandoverStatus(StrEnum):
    """The allowed moves between these are in services/handover/state_machine.py."""

    PENDING = "pending"  # waiting for a manager
    ACTIVE = "active"  # a manager took it
    RESOLVED = "resolved"
    BOT_HANDLING = "bot_handling"  # a manager gave the conversation back to the bot
    TIMEOUT = "timeout"  # nobody took it in time: closed, the bot is back


OPEN_HANDOVER_STATUSES = (HandoverStatus.PENDING, HandoverStatus.ACTIVE)


class HandoverOutcome(StrEnum):
    """How a handover ended (handovers.outcome, set when it closes): what the report counts."""

    RESOLVED = "resolved"  # a manager pressed "Решено"
    RETURNED = "returned"  # a manager gave the conversation back to the bot
    CANCELLED = "cancelled"  # the customer withdrew the request while waiting
    UNTAKEN = "untaken"  # auto-closed: nobody took it
    SILENT = "silent"  # auto-closed: taken, then nobody wrote for active_auto_close_minutes


class HandoverReason(StrEnum):
    """Why a handover was opened (handovers.reason; also the actor of its `created` event)."""

    HUMAN_REQUEST = "human_request"
    FRUSTRATION = "frustration"
    AI_ERROR = "ai_error"
    NO_KNOWLEDGE = "no_knowledge"
    MEDIA = "media"
    MANAGER_INITIATED = "manager_initiated"
    SENSITIVE = "sensitive"  # a topic the client wants a person for (payment, contraindications, ...)


class HandoverAction(StrEnum):
    """What happened to a handover (handover_events.action). The manager's four buttons are among them."""

    CREATED = "created"
    TAKE = "take"
    SKIP = "skip"
    RESOLVE = "resolve"
    RETURN = "return"  # to the bot
    REPLY = "reply"  # a manager's reply delivered to the customer
    CANCELLED_BY_CUSTOMER = "cancelled_by_customer"
    REMINDER_1 = "reminder_1"
    REMINDER_2 = "reminder_2"
    TIMEOUT = "timeout"
    ACTIVE_REMINDER = "active_reminder"  # the assignee reminded of an unanswered customer
    ACTIVE_URGENT = "active_urgent"
    AUTO_CLOSED = "auto_closed"  # a taken handover closed after silence on both sides


class Handover(Base):
    """A request for a human manager to take a conversation over, and its lifecycle."""

    __tablename__ = "handovers"
    __table_args__ = (
        CheckConstraint(check_in("status", HandoverStatus), name="status"),
        CheckConstraint(check_in("outcome", HandoverOutcome), name="outcome"),
        # At most one open handover per conversation, whatever races happen above.
        Index(
            "uq_handovers_open_per_conversation", "conversation_id", unique=True, postgresql_where=text("status IN ('pending', 'active')")
        ),
        Index("ix_handovers_status_activity", "status", "last_activity_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"))
    status: Mapped[HandoverStatus] = mapped_column(EnumText(HandoverStatus, 16), default=HandoverStatus.PENDING, server_default="pending")
    reason: Mapped[str] = mapped_column(String(32))
    reason_detail: Mapped[str | None] = mapped_column(String(200))  # e.g. the sensitive topic, the model's reason
    outcome: Mapped[HandoverOutcome | None] = mapped_column(EnumText(HandoverOutcome, 16))
    assigned_to: Mapped[str | None] = mapped_column(String(200))
    assigned_to_id: Mapped[int | None] = mapped_column(BigInteger)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = now_column()
    last_activity_at: Mapped[datetime] = now_column()
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The clocks (handover/reminders.py) read these; each notice records when it went, so a restart
    # between two checks neither loses nor repeats one.
    last_customer_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_manager_reply_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active_reminder_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active_urgent_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last notice the waiting customer got (the acknowledgement, then "a manager will answer soon")
    customer_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @classmethod
    def open_in(cls, conversation_id: uuid.UUID | SQLCoreOperations[uuid.UUID]) -> ColumnElement[bool]:
        """The condition "the open handover of this conversation" (at most one: the partial unique index)."""
        return (cls.conversation_id == conversation_id) & cls.status.in_(OPEN_HANDOVER_STATUSES)


class HandoverEvent(Base):
    """An action on a handover (take, skip, resolve, reminder, ...), kept for statistics and audit."""

    __tablename__ = "handover_events"

    id: Mapped[uuid.UUID] = uuid_pk()
    handover_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("handovers.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = now_column()
