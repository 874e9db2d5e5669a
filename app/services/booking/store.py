"""Where bookings and services lists are kept: the one module that reads and writes them, behind a repository
interface (BookingStore), so a calendar (Google Calendar, YCLIENTS, Altegio) can be put behind it later. Every
method works in the caller's session and only flushes; the caller's transaction commits."""

import uuid
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.models import BookingRequest, BookingStatus, Service
from app.services.booking.catalog import Catalog, Entry

COLLECTING_HOURS = 24  # a request left half-collected this long is dropped: the customer has moved on
_OPEN = (BookingStatus.REQUESTED, BookingStatus.CONFIRMED)


class BookingStore(Protocol):
    def catalog(self, client_id: uuid.UUID) -> Catalog: ...
    def replace_services(self, client_id: uuid.UUID, entries: list[Entry]) -> int: ...
    def in_progress(self, conversation_id: uuid.UUID, *, now: datetime, lock: bool = False) -> BookingRequest | None: ...
    def start(self, *, client_id: uuid.UUID, conversation_id: uuid.UUID, timezone: str) -> BookingRequest: ...
    def get(self, booking_id: uuid.UUID, *, client_id: uuid.UUID, lock: bool = False) -> BookingRequest | None: ...
    def awaiting_proposal(self, conversation_id: uuid.UUID, manager_id: int) -> BookingRequest | None: ...
    def upcoming(self, conversation_id: uuid.UUID, *, now: datetime) -> BookingRequest | None: ...
    def listed(self, client_id: uuid.UUID, *, status: BookingStatus | None, limit: int) -> list[BookingRequest]: ...


class SqlBookingStore:
    """The bookings and services lists in PostgreSQL."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def catalog(self, client_id: uuid.UUID) -> Catalog:
        rows = self.session.scalars(select(Service).where(Service.client_id == client_id).order_by(Service.position, Service.name))
        return Catalog.of([Entry(r.name, tuple(r.aliases or ()), r.duration_minutes, r.price, r.price_max, r.currency, r.id) for r in rows])

    def replace_services(self, client_id: uuid.UUID, entries: list[Entry]) -> int:
        """The client's list becomes exactly these entries (bookings keep the service's name if it goes)."""
        self.session.execute(delete(Service).where(Service.client_id == client_id))
        for position, e in enumerate(entries):
            self.session.add(
                Service(
                    client_id=client_id,
                    name=e.name,
                    aliases=list(e.aliases),
                    duration_minutes=e.duration_minutes,
                    price=e.price,
                    price_max=e.price_max,
                    currency=e.currency,
                    position=position,
                )
            )
        self.session.flush()
        return len(entries)

    def in_progress(self, conversation_id: uuid.UUID, *, now: datetime, lock: bool = False) -> BookingRequest | None:
        """The request the customer's next words are about: one being collected (recently), or one whose
        manager's proposal waits for the customer's answer."""
        self.session.execute(
            update(BookingRequest)
            .where(
                BookingRequest.conversation_id == conversation_id,
                BookingRequest.status == BookingStatus.COLLECTING,
                BookingRequest.updated_at < now - timedelta(hours=COLLECTING_HOURS),
            )
            .values(status=BookingStatus.CANCELLED, asking=None)
        )
        query = (
            select(BookingRequest)
            .where(
                BookingRequest.conversation_id == conversation_id,
                (BookingRequest.status == BookingStatus.COLLECTING)
                | ((BookingRequest.status == BookingStatus.REQUESTED) & BookingRequest.proposed_at.is_not(None)),
            )
            .order_by(BookingRequest.updated_at.desc())
            .limit(1)
        )
        return self.session.scalar(query.with_for_update() if lock else query)

    def start(self, *, client_id: uuid.UUID, conversation_id: uuid.UUID, timezone: str) -> BookingRequest:
        booking = BookingRequest(client_id=client_id, conversation_id=conversation_id, status=BookingStatus.COLLECTING, timezone=timezone)
        self.session.add(booking)
        self.session.flush()
        return booking

    def get(self, booking_id: uuid.UUID, *, client_id: uuid.UUID, lock: bool = False) -> BookingRequest | None:
        query = select(BookingRequest).where(BookingRequest.id == booking_id, BookingRequest.client_id == client_id)
        return self.session.scalar(query.with_for_update() if lock else query)

    def awaiting_proposal(self, conversation_id: uuid.UUID, manager_id: int) -> BookingRequest | None:
        """The request whose manager pressed "other time" and has not written the time yet (locked)."""
        return self.session.scalar(
            select(BookingRequest)
            .where(
                BookingRequest.conversation_id == conversation_id,
                BookingRequest.status == BookingStatus.REQUESTED,
                BookingRequest.proposal_from_id == manager_id,
            )
            .order_by(BookingRequest.updated_at.desc())
            .limit(1)
            .with_for_update()
        )

    def upcoming(self, conversation_id: uuid.UUID, *, now: datetime) -> BookingRequest | None:
        """The customer's next requested or confirmed booking, if any."""
        return self.session.scalar(
            select(BookingRequest)
            .where(BookingRequest.conversation_id == conversation_id, BookingRequest.status.in_(_OPEN), BookingRequest.requested_at > now)
            .order_by(BookingRequest.requested_at)
            .limit(1)
        )

    def listed(self, client_id: uuid.UUID, *, status: BookingStatus | None, limit: int) -> list[BookingRequest]:
        query = select(BookingRequest).where(BookingRequest.client_id == client_id)
        if status is not None:
            query = query.where(BookingRequest.status == status)
        return list(self.session.scalars(query.order_by(BookingRequest.requested_at.desc().nulls_last()).limit(limit)))


def store(session: Session) -> BookingStore:
    """The booking store for this unit of work."""
    return SqlBookingStore(session)
