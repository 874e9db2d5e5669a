import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class TurnLease(Base):
    """Who is answering a conversation's turn, until when (renewed by the owner's heartbeat), and the claim's
    version: every new claim increments it, and the turn's final write checks it (fencing)."""

    __tablename__ = "turn_leases"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(120))  # host:pid:random of the process holding it
    turn_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))  # the claim's messages carry it
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: released
