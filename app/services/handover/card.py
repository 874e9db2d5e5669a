"""What managers read in Telegram about a handover: the card (status, customer, reason, the latest messages,
buttons), the line quoting a customer, the topic's name. Pure rendering from plain values: no I/O."""

import uuid
from dataclasses import dataclass
from typing import Any

from app.models import HandoverAction, HandoverOutcome, HandoverReason, HandoverStatus, MessageRole
from app.services.channels.telegram import TEXT_LIMIT, cut, escape, length, split

HISTORY_MESSAGES = 6  # the latest messages shown on a card
MESSAGE_CHARS = 400  # each cut to this
NAME_CHARS = 64
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
    """The card as HTML. Every customer-given piece is cut first and escaped after, and the oldest messages
    are left out until the visible text fits one Telegram message: the card must always be accepted."""
    status = OUTCOME_LINES.get(view.outcome, STATUS_LINES[view.status]) if view.outcome else STATUS_LINES[view.status]
    if view.status in _SHOWS_ASSIGNEE and view.assigned_to:
        status += f" · {escape(cut(view.assigned_to, NAME_CHARS))}"
    reason = REASON_LABELS.get(view.reason) or escape(cut(view.reason, NAME_CHARS))
    if view.reason_detail:
        reason += f": {escape(cut(view.reason_detail, 200))}"
    head = [
        status,
        f"Клиент: {escape(cut(view.customer_name or 'без имени', NAME_CHARS))} · +{view.phone}",
        f"Причина: {reason}",
    ]
    recent = [(ROLE_ICONS[role], cut(content, MESSAGE_CHARS)) for role, content in view.recent]
    budget = TEXT_LIMIT - sum(length(line) + 1 for line in head) - length("\nПоследние сообщения:")
    while recent and sum(length(f"\n{icon} {content}") for icon, content in recent) > budget:
        recent.pop(0)
    lines = head
    if recent:
        lines += ["", "Последние сообщения:", *(f"{icon} {escape(content)}" for icon, content in recent)]
    return "\n".join(lines)


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


def customer_parts(name: str | None, message: str, *, note: str | None = None) -> list[str]:
    """A customer's words for their topic, as HTML messages that each fit: the words are split first and
    escaped after, so no character and no cut can break a message. `note` (plain) goes before the name."""
    who = cut(name, NAME_CHARS) if name else "Клиент"
    head = (f"{note}\n" if note else "") + f"👤 {who}:\n"
    html_head = (f"{escape(note)}\n" if note else "") + f"👤 <b>{escape(who)}</b>:\n"
    parts = split(message, TEXT_LIMIT - length(head)) or [""]
    return [html_head + escape(parts[0]), *(escape(part) for part in parts[1:])]


def topic_name(name: str | None, phone: str) -> str:
    return f"{name or 'Клиент'} +{phone}"
