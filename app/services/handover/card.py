"""What managers read in Telegram about a handover: the card (status, customer, reason, the latest messages,
buttons), the line quoting a customer, the topic's name. Pure rendering from plain values: no I/O."""

import uuid
from dataclasses import dataclass
from typing import Any

from app.models import HandoverAction, HandoverOutcome, HandoverReason, HandoverStatus, MessageRole
from app.services.channels.telegram import TEXT_LIMIT, escape
from app.utils.text import truncate

HISTORY_MESSAGES = 6  # the latest messages shown on a card
ROLE_ICONS = {MessageRole.USER: "👤", MessageRole.ASSISTANT: "🤖", MessageRole.MANAGER: "🧑‍💼"}
REASON_LABELS: dict[str, str] = {
    HandoverReason.HUMAN_REQUEST: "клиент просит менеджера",
    HandoverReason.FRUSTRATION: "клиент недоволен",
    HandoverReason.AI_ERROR: "бот не смог ответить (ошибка AI)",
    HandoverReason.NO_KNOWLEDGE: "бот не нашёл ответа в базе знаний",
    HandoverReason.MEDIA: "клиент прислал файл",
    HandoverReason.MANAGER_INITIATED: "менеджер написал первым",
    HandoverReason.SENSITIVE: "деликатная тема",
}
STATUS_LINES = {
    HandoverStatus.PENDING: "🆘 <b>Нужен менеджер</b>",
    HandoverStatus.ACTIVE: "🟢 <b>В работе</b>",
    HandoverStatus.RESOLVED: "✅ <b>Решено</b>",
    HandoverStatus.BOT_HANDLING: "🤖 <b>Возвращено боту</b>",
    HandoverStatus.TIMEOUT: "⌛ <b>Закрыто: никто не взял</b>",
}
# A closed card says how it ended, where the status alone does not.
OUTCOME_LINES = {
    HandoverOutcome.CANCELLED: "🚫 <b>Клиент отказался</b>",
    HandoverOutcome.SILENT: "⌛ <b>Закрыто автоматически: долго не было сообщений</b>",
}
_SHOWS_ASSIGNEE = (HandoverStatus.ACTIVE, HandoverStatus.RESOLVED, HandoverStatus.BOT_HANDLING, HandoverStatus.TIMEOUT)
# The card's buttons; callback_data is "<action>_<handover id>" (at most 64 bytes: 8 + 1 + 36).
BUTTONS = (HandoverAction.TAKE, HandoverAction.SKIP, HandoverAction.RESOLVE, HandoverAction.RETURN)
_LABELS = {
    HandoverAction.TAKE: "✋ Взять",
    HandoverAction.SKIP: "⏭ Пропустить",
    HandoverAction.RESOLVE: "✅ Решено",
    HandoverAction.RETURN: "🤖 Вернуть боту",
}


@dataclass(frozen=True)
class CardView:
    """What a card shows, read from the handover, its conversation and customer."""

    handover_id: uuid.UUID
    status: HandoverStatus
    reason: str
    reason_detail: str | None
    outcome: HandoverOutcome | None
    assigned_to: str | None
    customer_name: str | None
    phone: str
    recent: list[tuple[MessageRole, str]]  # the latest messages with text, oldest first


def text(view: CardView) -> str:
    status = OUTCOME_LINES.get(view.outcome, STATUS_LINES[view.status]) if view.outcome else STATUS_LINES[view.status]
    if view.status in _SHOWS_ASSIGNEE and view.assigned_to:
        status += f" · {escape(view.assigned_to)}"
    reason = REASON_LABELS.get(view.reason, escape(view.reason))
    if view.reason_detail:
        reason += f": {escape(view.reason_detail)}"
    lines = [
        status,
        f"Клиент: {escape(view.customer_name or 'без имени')} · +{view.phone}",
        f"Причина: {reason}",
    ]
    if view.recent:
        lines.append("")
        lines.append("Последние сообщения:")
        lines += [f"{ROLE_ICONS[role]} {escape(truncate(content, 400))}" for role, content in view.recent]
    return truncate("\n".join(lines), TEXT_LIMIT)


def buttons(view: CardView) -> dict[str, Any] | None:
    """Take or skip a pending handover; resolve it or give it back to the bot while it is open."""
    if view.status == HandoverStatus.PENDING:
        rows = [[HandoverAction.TAKE, HandoverAction.SKIP], [HandoverAction.RESOLVE, HandoverAction.RETURN]]
    elif view.status == HandoverStatus.ACTIVE:
        rows = [[HandoverAction.RESOLVE, HandoverAction.RETURN]]
    else:
        return None
    return {
        "inline_keyboard": [[{"text": _LABELS[action], "callback_data": f"{action}_{view.handover_id}"} for action in row] for row in rows]
    }


def parse_button(data: str) -> tuple[HandoverAction | None, uuid.UUID | None]:
    """A pressed button's action (None if not one of BUTTONS) and handover id (None if unreadable)."""
    raw_action, _, raw_id = data.partition("_")
    action = next((button for button in BUTTONS if button == raw_action), None)
    try:
        return action, uuid.UUID(raw_id)
    except ValueError:
        return action, None


def customer_line(name: str | None, message: str) -> str:
    """A customer's words in their topic, escaped so no character can break the HTML message."""
    who = escape(name) if name else "Клиент"
    return f"👤 <b>{who}</b>:\n{escape(message)}"


def topic_name(name: str | None, phone: str) -> str:
    return f"{name or 'Клиент'} +{phone}"
