import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class ConversationState(StrEnum):
    """Who has the conversation, following its handover (see handover/state_machine.py)."""

    BOT = "bot"
    PENDING = "pending"  # a manager was called and has not taken it yet
    MANAGER = "manager"


class BotStatus(StrEnum):
    ACTIVE = "active"
    MUTED = "muted"


class Conversation(Base):
    """The one ongoing WhatsApp thread between a customer and a client."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("client_id", "user_id"),
        CheckConstraint(check_in("state", ConversationState), name="state"),
        CheckConstraint(check_in("bot_status", BotStatus), name="bot_status"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"))
    branch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("branches.id", ondelete="SET NULL"))
    state: Mapped[ConversationState] = mapped_column(EnumText(ConversationState, 16), default=ConversationState.BOT, server_default="bot")
    bot_status: Mapped[BotStatus] = mapped_column(EnumText(BotStatus, 16), default=BotStatus.ACTIVE, server_default="active")
    # NULL with bot_status='muted' means muted until someone unmutes (e.g. an open handover).
    bot_muted_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mute_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    telegram_topic_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())

    def bot_muted(self, now: datetime) -> bool:
        """Whether the bot must stay silent in this conversation at `now` (as SQL: `muted_at`)."""
        if self.bot_status != BotStatus.MUTED:
            return False
        return self.bot_muted_until is None or self.bot_muted_until > now

    @classmethod
    def muted_at(cls, now: ColumnElement[datetime]) -> ColumnElement[bool]:
        """bot_muted() as a condition of a query."""
        return (cls.bot_status == BotStatus.MUTED) & (cls.bot_muted_until.is_(None) | (cls.bot_muted_until > now))
