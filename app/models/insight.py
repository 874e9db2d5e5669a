"""What the owner learns about the bot: questions it could not answer, managers' answers offered as knowledge,
and the daily digests already sent."""

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import REAL, CheckConstraint, Date, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class KnowledgeGap(Base):
    """A customer's question the knowledge base had nothing for (a turn that found no knowledge, or the question
    behind a handover opened for missing knowledge), with the query vector its search computed."""

    __tablename__ = "knowledge_gaps"
    __table_args__ = (
        Index("ix_knowledge_gaps_client_created", "client_id", "created_at"),  # listing and retention
        Index("ix_knowledge_gaps_handover", "handover_id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"))
    handover_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("handovers.id", ondelete="SET NULL"))
    question: Mapped[str] = mapped_column(Text)
    # The search's query vector (None when the search did not run); `embedder` names its vector space
    vector: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    embedder: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = now_column()


class SuggestionStatus(StrEnum):
    PENDING = "pending"  # waiting for an operator
    ACCEPTED = "accepted"  # added to the knowledge base
    REJECTED = "rejected"


class Suggestion(Base):
    """A question the bot could not answer and a manager's answer to it: a Q&A entry for the knowledge base,
    added only when an operator accepts it (`kb accept`)."""

    __tablename__ = "kb_suggestions"
    __table_args__ = (
        CheckConstraint(check_in("status", SuggestionStatus), name="status"),
        Index("ix_kb_suggestions_client_created", "client_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    # One suggestion per handover opened for missing knowledge
    handover_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("handovers.id", ondelete="SET NULL"), unique=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    manager: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[SuggestionStatus] = mapped_column(EnumText(SuggestionStatus, 16), default=SuggestionStatus.PENDING)
    source: Mapped[str | None] = mapped_column(String(200))  # the knowledge base document it became
    created_at: Mapped[datetime] = now_column()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DailyDigest(Base):
    """A client's digest of one local day, claimed once (the primary key) in the transaction that queues it."""

    __tablename__ = "daily_digests"

    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # the client's local day it reports
    outbox_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # None: skipped, there was no traffic
    created_at: Mapped[datetime] = now_column()
