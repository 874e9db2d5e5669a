"""What managers read about a booking request in the customer's topic: its card (state, customer, service, time)
and its buttons. Pure rendering from plain values.

callback_data is "<action>_<booking id>": at most 9 + 1 + 36 = 46 bytes (Telegram allows 64)."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.models import BookingStatus
from app.services.booking import texts
from app.services.channels.telegram import escape


class BookingAction(StrEnum):
    CONFIRM = "bkconfirm"
    PROPOSE = "bkpropose"
    DECLINE = "bkdecline"


_LABELS = {
    BookingAction.CONFIRM: "✅ Подтвердить",
    BookingAction.PROPOSE: "🕐 Предложить другое время",
    BookingAction.DECLINE: "❌ Отклонить",
}


@dataclass(frozen=True)
class CardView:
    booking_id: uuid.UUID
    status: BookingStatus
    customer_name: str | None
    phone: str
    service: str | None  # the services list's line, or the customer's words
    listed: bool  # the service is on the list
    at: datetime | None  # in the client's time zone
    proposal_from: str | None = None  # a manager writing another time
    proposed_at: datetime | None = None  # sent to the customer, waiting for "да"
    decided_by: str | None = None


def status_line(view: CardView) -> str:
    who = f" · {escape(view.decided_by)}" if view.decided_by else ""
    if view.status == BookingStatus.REQUESTED and view.proposed_at is not None:
        return f"⏳ <b>Запись: клиенту предложено {texts.short_moment(view.proposed_at)}, ждём ответа</b>{who}"
    if view.status == BookingStatus.REQUESTED and view.proposal_from:
        return f"✏️ <b>Запись: {escape(view.proposal_from)} пишет другое время</b> (следующее сообщение в этой теме)"
    return {
        BookingStatus.REQUESTED: "📅 <b>Запись: ждёт подтверждения</b>",
        BookingStatus.CONFIRMED: f"✅ <b>Запись подтверждена</b>{who}",
        BookingStatus.DECLINED: f"❌ <b>Запись отклонена</b>{who}",
        BookingStatus.CANCELLED: "🚫 <b>Клиент отменил запись</b>",
        BookingStatus.COLLECTING: "🕐 <b>Клиент выбирает другое время</b>",
    }[view.status]


def text(view: CardView) -> str:
    service = escape(view.service) if view.service else "не указана"
    if view.service and not view.listed:
        service += " (нет в прайсе)"
    lines = [
        status_line(view),
        f"Клиент: {escape(view.customer_name or 'без имени')} · +{view.phone}",
        f"Услуга: {service}",
        f"Когда: {texts.short_moment(view.at) if view.at else 'не выбрано'}",
    ]
    return "\n".join(lines)


def buttons(view: CardView) -> dict[str, Any] | None:
    """Confirm, propose another time or decline while the request waits for a manager; none after."""
    if view.status != BookingStatus.REQUESTED:
        return None
    rows = [[BookingAction.CONFIRM, BookingAction.PROPOSE], [BookingAction.DECLINE]]
    return {"inline_keyboard": [[{"text": _LABELS[a], "callback_data": f"{a}_{view.booking_id}"} for a in row] for row in rows]}


def parse_button(data: str) -> tuple[BookingAction | None, uuid.UUID | None]:
    raw_action, _, raw_id = data.partition("_")
    action = next((a for a in BookingAction if a == raw_action), None)
    try:
        return action, uuid.UUID(raw_id)
    except ValueError:
        return action, None
