"""A turn's booking step applied in the turn's transaction: the request saved, its card queued for the managers,
and what managers must know (the customer retimed, cancelled, asked a price the list does not have)."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from app import db
from app.models import BookingRequest, BookingStatus
from app.schemas.outbox import BookingCard
from app.services.booking import flow, texts
from app.services.booking.store import store
from app.services.channels import outbox
from app.services.channels.telegram import escape
from app.services.handover import topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What the turn does about bookings and prices, applied only when its answer goes out."""

    booking_id: uuid.UUID | None = None  # the request the step continues (None: a new one)
    step: flow.Step | None = None
    unlisted_price: bool = False  # a price the list does not have was taken out of the answer: managers are asked


def draft_of(booking: BookingRequest) -> flow.Draft:
    zone = ZoneInfo(booking.timezone)
    return flow.Draft(
        service_id=booking.service_id,
        service_name=booking.service_name,
        day=booking.requested_day,
        at=booking.requested_at.astimezone(zone) if booking.requested_at else None,
        name=booking.customer_name,
        asking=booking.asking,
        proposed_at=booking.proposed_at.astimezone(zone) if booking.proposed_at else None,
    )


def queue_card(session: Session, booking: BookingRequest) -> None:
    """(Re)render the request's card in the customer's topic from its state at delivery time."""
    outbox.add(session, client_id=booking.client_id, conversation_id=booking.conversation_id, payload=BookingCard(booking_id=booking.id))


def apply(session: Session, plan: Plan, *, client_id: uuid.UUID, conversation_id: uuid.UUID, timezone: str, customer_text: str) -> None:
    """Save the step's request and tell the managers what they must know, in the caller's transaction."""
    if plan.unlisted_price:
        topics.queue_text(
            session,
            client_id=client_id,
            conversation_id=conversation_id,
            text=f"💬 Клиент спрашивает цену, которой нет в прайсе:\n{escape(customer_text)}\nОтветьте в этой теме — ответ уйдёт клиенту.",
        )
    step = plan.step
    if step is None:
        return
    bookings = store(session)
    booking = bookings.get(plan.booking_id, client_id=client_id, lock=True) if plan.booking_id else None
    if booking is None:
        if step.outcome == flow.Outcome.CANCELLED:
            return
        booking = bookings.start(client_id=client_id, conversation_id=conversation_id, timezone=timezone)
    had_card = booking.telegram_message_id is not None or booking.submitted_at is not None
    _write(booking, step.draft)
    now = db.now(session)
    if step.outcome == flow.Outcome.COLLECTING:
        booking.status = BookingStatus.COLLECTING
    elif step.outcome == flow.Outcome.SUBMITTED:
        booking.status, booking.submitted_at = BookingStatus.REQUESTED, now
        booking.proposal_from = booking.proposal_from_id = None
    elif step.outcome == flow.Outcome.CANCELLED:
        booking.status, booking.asking = BookingStatus.CANCELLED, None
    elif step.outcome == flow.Outcome.ACCEPTED:
        booking.status, booking.decided_at = BookingStatus.CONFIRMED, now
        booking.decided_by, booking.decided_by_id = booking.proposal_from, booking.proposal_from_id
    session.flush()
    if step.outcome == flow.Outcome.SUBMITTED or had_card:
        queue_card(session, booking)
    if step.retimed and step.draft.at is not None:
        topics.queue_text(
            session,
            client_id=client_id,
            conversation_id=conversation_id,
            text=f"🔁 Клиент предлагает другое время: {texts.short_moment(step.draft.at)}",
        )
    logger.info("booking.step", extra={"booking_id": str(booking.id), "conversation_id": str(conversation_id), "outcome": step.outcome})


def _write(booking: BookingRequest, draft: flow.Draft) -> None:
    booking.service_id, booking.service_name = draft.service_id, draft.service_name
    booking.requested_day, booking.requested_at = draft.day, draft.at
    booking.customer_name, booking.asking, booking.proposed_at = draft.name, draft.asking, draft.proposed_at


def attach_to_handover(session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, now: datetime) -> None:
    """A manager was called: the customer's upcoming booking goes into the topic with it (moving or cancelling it)."""
    booking = store(session).upcoming(conversation_id, now=now)
    if booking is None or booking.requested_at is None:
        return
    state = "подтверждена" if booking.status == BookingStatus.CONFIRMED else "ждёт подтверждения"
    service = escape(booking.service_name or texts.NO_SERVICE)
    at = texts.short_moment(booking.requested_at.astimezone(ZoneInfo(booking.timezone)))
    topics.queue_text(session, client_id=client_id, conversation_id=conversation_id, text=f"📅 Запись клиента ({state}): {service}, {at}")
