"""A manager decides a booking request in the customer's topic: «Подтвердить» and «Отклонить» tell the customer at
once; «Предложить другое время» makes that manager's next message in the topic the proposal, which the customer
accepts with "да" (flow.py). Two managers pressing at once are serialised by the request's row lock: one wins,
the other is told who decided. The card's delivery (send once, then edit in place) is here too."""

import logging
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import BookingField, BookingRequest, BookingStatus, Client, Conversation, MessageRole, User
from app.schemas.outbox import BookingCard
from app.services import clients, hours
from app.services.booking import apply, card, flow, texts, when
from app.services.booking.store import store
from app.services.channels import outbox, telegram
from app.services.channels.outbox import Delivery, SaveProgress
from app.services.channels.telegram import escape
from app.services.handover import topics
from app.services.handover.manager_actions import CallbackAnswer, Manager

logger = logging.getLogger(__name__)

ASK_FOR_TIME = (
    "✏️ {manager}, напишите в этой теме время, которое предложить клиенту (например: «завтра в 17:00»): "
    "ваше следующее сообщение уйдёт клиенту как предложение."
)
TIME_NOT_UNDERSTOOD = "⚠️ Не понял время: {problem}. Напишите, например: «завтра в 17:00» или «в субботу в 11»."
_UNREADABLE = {when.Problem.PAST: "это время уже прошло", when.Problem.CLOSED: "в это время компания не работает"}
PROPOSAL_SENT = "📨 Клиенту предложено {when}. Ждём его ответа."
_DECIDED = {
    BookingStatus.CONFIRMED: "Запись уже подтвердил(а) {who}",
    BookingStatus.DECLINED: "Запись уже отклонил(а) {who}",
    BookingStatus.CANCELLED: "Клиент отменил запись",
    BookingStatus.COLLECTING: "Клиент выбирает другое время",
}


def press(session: Session, *, client: Client, data: str, manager: Manager) -> CallbackAnswer:
    """Confirm, decline or propose another time for a booking request."""
    action, booking_id = card.parse_button(data)
    if action is None or booking_id is None:
        return CallbackAnswer("Неизвестная кнопка", alert=True)
    booking = store(session).get(booking_id, client_id=client.id, lock=True)
    if booking is None:
        return CallbackAnswer("Заявка не найдена", alert=True)
    if booking.status != BookingStatus.REQUESTED:
        apply.queue_card(session, booking)  # a stale card: bring it up to date
        return CallbackAnswer(_DECIDED[booking.status].format(who=booking.decided_by or "другой менеджер"), alert=True)
    settings = clients.settings_of(client)
    draft = apply.draft_of(booking)
    now = db.now(session)
    if action == card.BookingAction.PROPOSE:
        if booking.proposal_from_id not in (None, manager.id) and booking.proposed_at is None:
            return CallbackAnswer(f"Другое время уже пишет {booking.proposal_from}", alert=True)
        booking.proposal_from, booking.proposal_from_id, booking.proposed_at = manager.name, manager.id, None
        topics.queue_text(
            session, client_id=client.id, conversation_id=booking.conversation_id, text=ASK_FOR_TIME.format(manager=escape(manager.name))
        )
        apply.queue_card(session, booking)
        return CallbackAnswer("Напишите время в этой теме")
    booking.decided_by, booking.decided_by_id, booking.decided_at = manager.name, manager.id, now
    booking.proposal_from = booking.proposal_from_id = booking.proposed_at = None
    if action == card.BookingAction.CONFIRM:
        booking.status = BookingStatus.CONFIRMED
        _tell_customer(session, booking, flow.confirmed_text(settings, draft))
        answer = "Подтверждено: клиенту отправлено"
    else:
        booking.status = BookingStatus.DECLINED
        assert draft.at is not None
        _tell_customer(session, booking, texts.say(settings, "declined", when=texts.at_moment(draft.at)))
        _ask_again(session, booking, now=now)
        answer = "Отклонено: клиента попросили выбрать другое время"
    apply.queue_card(session, booking)
    logger.info("booking.decided", extra={"booking_id": str(booking.id), "status": booking.status, "client": client.slug})
    return CallbackAnswer(answer)


def _ask_again(session: Session, declined: BookingRequest, *, now: Any) -> None:
    """After a decline the customer's next time goes on the same service and name (a new request being collected)."""
    bookings = store(session)
    if bookings.in_progress(declined.conversation_id, now=now) is not None:
        return
    again = bookings.start(client_id=declined.client_id, conversation_id=declined.conversation_id, timezone=declined.timezone)
    again.service_id, again.service_name, again.customer_name = declined.service_id, declined.service_name, declined.customer_name
    again.asking = BookingField.TIME


def proposal(session: Session, *, client: Client, thread_id: int | None, telegram_message_id: int, manager: Manager, text: str) -> bool:
    """A manager's message in a topic where they pressed «Предложить другое время»: the proposal to the customer.
    False when it is not one (an ordinary reply to the customer)."""
    if thread_id is None or text.startswith("/"):
        return False
    conversation_id = session.scalar(
        select(Conversation.id).where(Conversation.client_id == client.id, Conversation.telegram_topic_id == thread_id)
    )
    if conversation_id is None:
        return False
    booking = store(session).awaiting_proposal(conversation_id, manager.id)
    if booking is None or booking.proposed_at is not None:
        return False
    settings = clients.settings_of(client)
    schedule = hours.schedule_of(settings)
    now = db.now(session)
    said = when.read(text, now=now.astimezone(schedule.tz))
    moment = when.resolve(said, now=now, schedule=schedule, day=booking.requested_day)
    problem = None if moment is None else when.check(moment, now=now, schedule=schedule)
    if moment is None or problem is not None:
        why = _UNREADABLE[problem] if problem else "нет дня и часа"
        topics.queue_text(
            session,
            client_id=client.id,
            conversation_id=conversation_id,
            text=TIME_NOT_UNDERSTOOD.format(problem=why),
            reply_to=telegram_message_id,
        )
        return True
    booking.proposed_at = moment
    _tell_customer(session, booking, texts.say(settings, "proposal", when=texts.at_moment(moment)))
    topics.queue_text(
        session,
        client_id=client.id,
        conversation_id=conversation_id,
        text=PROPOSAL_SENT.format(when=texts.short_moment(moment)),
        reply_to=telegram_message_id,
    )
    apply.queue_card(session, booking)
    logger.info("booking.proposed", extra={"booking_id": str(booking.id), "client": client.slug})
    return True


def _tell_customer(session: Session, booking: BookingRequest, text: str) -> None:
    outbox.queue_whatsapp_text(
        session,
        client_id=booking.client_id,
        conversation_id=booking.conversation_id,
        text=text,
        role=MessageRole.ASSISTANT,
        meta={"reason": "booking", "booking_id": str(booking.id)},
        dedup_key=f"booking:{booking.id}:{uuid.uuid4()}",
    )


# --- the card in the topic ------------------------------------------------------------------------------------


def deliver_card(delivery: Delivery[BookingCard], save_progress: SaveProgress) -> dict[str, Any]:
    """Render the card from the request's state now: send it once, afterwards edit it in place."""
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    booking_id = delivery.payload.booking_id

    def remember(message_id: int | None) -> None:
        with session_scope() as session:
            session.execute(update(BookingRequest).where(BookingRequest.id == booking_id).values(telegram_message_id=message_id))

    def send(topic_id: int) -> dict[str, Any]:
        with session_scope() as session:
            booking = session.get(BookingRequest, booking_id)
            if booking is None:
                return {"skipped": "booking gone"}
            view, message_id = _view(session, booking), booking.telegram_message_id
        log = {"booking_id": str(booking_id)}
        posted = topics.post_card(bot, chat_id, topic_id, card.text(view), card.buttons(view), message_id, remember, log=log)
        return {"message_id": posted, "topic_id": topic_id}

    return topics.in_topic(delivery, send)


def _view(session: Session, booking: BookingRequest) -> card.CardView:
    conversation = session.get(Conversation, booking.conversation_id)
    assert conversation is not None
    user = session.get(User, conversation.user_id)
    assert user is not None
    zone = ZoneInfo(booking.timezone)
    entry = store(session).catalog(booking.client_id).get(booking.service_id)
    return card.CardView(
        booking_id=booking.id,
        status=booking.status,
        customer_name=booking.customer_name or user.name,
        phone=user.phone,
        service=entry.line if entry else booking.service_name,
        listed=entry is not None,
        at=booking.requested_at.astimezone(zone) if booking.requested_at else None,
        proposal_from=booking.proposal_from,
        proposed_at=booking.proposed_at.astimezone(zone) if booking.proposed_at else None,
        decided_by=booking.decided_by,
    )
