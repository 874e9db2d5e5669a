import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, EnumText, check_in, now_column, uuid_pk


class Service(Base):
    """One line of a client's services list (`services load`): the truth for names, prices and durations."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("client_id", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[int | None] = mapped_column(Integer)  # None: the price is given by a person
    price_max: Mapped[int | None] = mapped_column(Integer)  # a range "8 000–12 000"
    currency: Mapped[str] = mapped_column(String(8), default="тг", server_default="тг")
    position: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # the order of the file
    created_at: Mapped[datetime] = now_column()


class BookingStatus(StrEnum):
    COLLECTING = "collecting"  # the bot is asking what is missing
    REQUESTED = "requested"  # the card is with the managers
    CONFIRMED = "confirmed"
    DECLINED = "declined"
    CANCELLED = "cancelled"  # by the customer, while collecting


class BookingField(StrEnum):
    """What a booking needs from the customer; also the question the bot asked last."""

    SERVICE = "service"
    TIME = "time"
    NAME = "name"


class BookingRequest(Base):
    """A customer's request to book a time, from the first "запишите" to the manager's decision."""

    __tablename__ = "booking_requests"
    __table_args__ = (
        CheckConstraint(check_in("status", BookingStatus), name="status"),
        CheckConstraint(check_in("asking", BookingField), name="asking"),
        # One request being collected per conversation, whatever races happen above.
        Index("uq_booking_requests_collecting", "conversation_id", unique=True, postgresql_where=text("status = 'collecting'")),
        Index("ix_booking_requests_client_status", "client_id", "status", "requested_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("conversations.id", ondelete="CASCADE"))
    status: Mapped[BookingStatus] = mapped_column(EnumText(BookingStatus, 16), default=BookingStatus.COLLECTING)
    service_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("services.id", ondelete="SET NULL"))
    service_name: Mapped[str | None] = mapped_column(String(200))  # the list's name, or the customer's words
    requested_day: Mapped[date | None] = mapped_column(Date)  # a day said without a time yet
    requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    timezone: Mapped[str] = mapped_column(String(64))
    customer_name: Mapped[str | None] = mapped_column(String(200))
    asking: Mapped[BookingField | None] = mapped_column(EnumText(BookingField, 16))
    # A manager pressed "other time": their next message in the topic is the proposal
    proposal_from_id: Mapped[int | None] = mapped_column(BigInteger)
    proposal_from: Mapped[str | None] = mapped_column(String(200))
    proposed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # waiting for the customer's "да"
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_by_id: Mapped[int | None] = mapped_column(BigInteger)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)  # the card
    extra: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # to the managers
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
