import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, check_in, now_column, uuid_pk

CONVERSATION_STATES = ("bot", "pending", "manager")
BOT_STATUSES = ("active", "muted")


class Conversation(Base):
    """The one ongoing WhatsApp thread between a customer and a client."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("client_id", "user_id"),
        CheckConstraint(check_in("state", CONVERSATION_STATES), name="state"),
        CheckConstraint(check_in("bot_status", BOT_STATUSES), name="bot_status"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"))
    branch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("branches.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="bot", server_default="bot")
    bot_status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    # NULL with bot_status='muted' means muted until someone unmutes (e.g. an open handover).
    bot_muted_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mute_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    telegram_topic_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())

    def bot_muted(self, now: datetime) -> bool:
        """Whether the bot must stay silent in this conversation at `now`."""
        if self.bot_status != "muted":
            return False
        return self.bot_muted_until is None or self.bot_muted_until > now
