"""What a manager does in Telegram, each update handled exactly once: a press on a handover card's buttons
(take, skip, resolve, return to the bot), or a reply in the customer's topic, which goes to the customer on
WhatsApp and is confirmed in the topic ("✅ Доставлено" only once the gateway accepted it)."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import (
    OPEN_HANDOVER_STATUSES,
    Client,
    Conversation,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverReason,
    HandoverStatus,
    MessageRole,
    TelegramUpdate,
)
from app.schemas.outbox import ManagerText, OutboxPayload
from app.schemas.telegram import TgCallbackQuery, TgUpdate
from app.services import clients, replies
from app.services.channels import outbox, telegram
from app.services.channels.outbox import Delivery, SaveProgress
from app.services.handover import card, lifecycle, topics
from app.utils.errors import ConfigError

logger = logging.getLogger(__name__)

DELIVERED = "✅ Доставлено"
NOT_YET_DELIVERED = "⚠️ Пока не доставлено: WhatsApp не отвечает. Повторю отправку автоматически."
NOT_A_MANAGER = "Нет доступа: вас нет в списке менеджеров этого чата"
NOT_DELIVERED = "❌ Не доставлено клиенту: {error}. Попробуйте позже или свяжитесь с клиентом иначе."


@dataclass(frozen=True)
class Manager:
    """Who acted in Telegram."""

    id: int
    name: str


@dataclass(frozen=True)
class CallbackAnswer:
    """What the manager sees after pressing a button (a toast, or an alert to dismiss)."""

    text: str
    alert: bool = False


def handle_update(update: TgUpdate, *, bot_id: int | None = None) -> dict[str, Any]:
    """Handle one Telegram update exactly once; the returned dict is the webhook's response body.

    `bot_id`: the bot the update came to (its own webhook path); None on the legacy shared path, where the
    chat alone must name one client."""
    callback, message = update.callback_query, update.message
    chat_message = callback.message if callback else message
    if chat_message is None:
        return {"ok": True}
    with session_scope() as session:
        client = _client_for(session, bot_id=bot_id, chat_id=chat_message.chat.id)
        if client is None:
            logger.info("telegram.unknown_chat", extra={"chat_id": chat_message.chat.id, "bot_id": bot_id})
            return _answer(callback, "Этот чат не подключён", alert=True)
        try:
            bot = telegram.bot_for(client)
        except ConfigError:
            return _answer(callback, "Бот не настроен", alert=True)
        first = session.scalar(
            insert(TelegramUpdate)
            .values(bot_id=bot_id or bot.id, update_id=update.update_id)
            .on_conflict_do_nothing()
            .returning(TelegramUpdate.update_id)
        )
        if first is None:
            logger.info("telegram.duplicate_update", extra={"update_id": update.update_id})
            return _answer(callback, "Уже обработано")
        client_settings = clients.settings_of(client)
        if callback is not None:
            who = callback.from_user
            if not client_settings.is_manager(who.id, who.username):
                logger.info("manager.not_allowed", extra={"client": client.slug, "user_id": who.id, "action": "press"})
                return _answer(callback, NOT_A_MANAGER, alert=True)
            manager = Manager(who.id, who.display_name)
            result = press(session, client=client, data=callback.data or "", manager=manager)
            response = _answer(callback, result.text, alert=result.alert)
        else:
            assert message is not None
            author = message.from_user
            if author is None or author.is_bot:
                return {"ok": True}
            if not client_settings.is_manager(author.id, author.username):
                logger.info("manager.not_allowed", extra={"client": client.slug, "user_id": author.id, "action": "reply"})
                return {"ok": True}
            reply(
                session,
                client=client,
                thread_id=message.message_thread_id if message.is_topic_message else None,
                telegram_message_id=message.message_id,
                manager=Manager(author.id, author.display_name),
                text=message.text or message.caption or "",
            )
            response = {"ok": True}
        queued = outbox.written(session)
    for item_id in queued:
        outbox.deliver_soon(item_id)
    return response


def _client_for(session: Session, *, bot_id: int | None, chat_id: int) -> Client | None:
    """The active client whose group this is, for this bot; None when none is (or, without a bot, several are)."""
    query = select(Client).where(Client.telegram_chat_id == chat_id, Client.is_active)
    if bot_id is not None:
        default = telegram.default_bot()
        own = Client.telegram_bot_id == bot_id
        query = query.where(or_(own, Client.telegram_bot_id.is_(None)) if default is not None and default.id == bot_id else own)
    found = list(session.scalars(query.limit(2)))
    if len(found) > 1:
        logger.warning("telegram.ambiguous_chat", extra={"chat_id": chat_id, "clients": [c.slug for c in found]})
        return None
    return found[0] if found else None


def _answer(callback: TgCallbackQuery | None, text: str, *, alert: bool = False) -> dict[str, Any]:
    """Answer the button press in the webhook response itself: no extra round trip, the spinner stops at once."""
    if callback is None:
        return {"ok": True}
    return {"method": "answerCallbackQuery", "callback_query_id": callback.id, "text": text[:200], "show_alert": alert}


# --- the card's buttons ----------------------------------------------------------------------------------


def press(session: Session, *, client: Client, data: str, manager: Manager) -> CallbackAnswer:
    """take / skip / resolve / return on a handover card. Two managers pressing at once are serialised by a row lock."""
    action, handover_id = card.parse_button(data)
    if handover_id is None:
        return CallbackAnswer("Неизвестная кнопка", alert=True)
    handover = session.scalar(select(Handover).where(Handover.id == handover_id, Handover.client_id == client.id).with_for_update())
    if handover is None:
        return CallbackAnswer("Заявка не найдена", alert=True)
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    if action == HandoverAction.SKIP:
        _event(session, handover, HandoverAction.SKIP, manager)
        return CallbackAnswer("Пропущено: заявка осталась для других")
    if handover.status not in OPEN_HANDOVER_STATUSES:
        topics.queue_card(session, handover)  # a stale card: bring it up to date
        return CallbackAnswer("Заявка уже закрыта", alert=True)
    if action == HandoverAction.TAKE:
        if handover.status == HandoverStatus.ACTIVE:
            if handover.assigned_to_id == manager.id:
                return CallbackAnswer("Вы уже ведёте этот диалог")
            return CallbackAnswer(f"Уже взял {handover.assigned_to}", alert=True)
        _take(session, handover=handover, conversation=conversation, manager=manager, client=client, now=db.now(session))
        return CallbackAnswer("Вы взяли диалог. Пишите ответ в этой теме — он уйдёт клиенту в WhatsApp.")
    if action in (HandoverAction.RESOLVE, HandoverAction.RETURN):
        target = HandoverStatus.RESOLVED if action == HandoverAction.RESOLVE else HandoverStatus.BOT_HANDLING
        if handover.assigned_to is None:
            handover.assigned_to, handover.assigned_to_id = manager.name, manager.id
        lifecycle.transition(session, handover=handover, conversation=conversation, target=target, now=db.now(session))
        _event(session, handover, action, manager)
        topics.queue_card(session, handover)
        logger.info("handover.closed", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id), "status": target})
        return CallbackAnswer("Диалог закрыт, бот снова отвечает" if action == HandoverAction.RESOLVE else "Диалог возвращён боту")
    return CallbackAnswer("Неизвестная кнопка", alert=True)


# --- replies in the customer's topic ---------------------------------------------------------------------


def reply(
    session: Session, *, client: Client, thread_id: int | None, telegram_message_id: int, manager: Manager, text: str
) -> uuid.UUID | None:
    """Queue a manager's reply to the customer of this topic (its outbox item; None when it is not a reply to
    deliver). Replying to a pending handover takes it; writing first opens one, so the bot keeps quiet."""
    if thread_id is None or not text.strip() or text.startswith("/"):
        return None
    conversation = session.scalar(
        select(Conversation).where(Conversation.client_id == client.id, Conversation.telegram_topic_id == thread_id).with_for_update()
    )
    if conversation is None:
        logger.info("manager.unknown_topic", extra={"client": client.slug, "topic_id": thread_id})
        return None
    now = db.now(session)
    handover = lifecycle.open_handover(session, conversation.id, lock=True)
    if handover is None:
        # The manager writes first (or after the handover closed): the bot must keep quiet while they talk.
        escalation = lifecycle.escalate(session, conversation=conversation, reason=HandoverReason.MANAGER_INITIATED)
        handover = session.get(Handover, escalation.handover_id)
        assert handover is not None
    if handover.status == HandoverStatus.PENDING:
        _take(session, handover=handover, conversation=conversation, manager=manager, client=client, now=now)
    handover.last_activity_at = now
    _event(session, handover, HandoverAction.REPLY, manager)
    outbox_id = outbox.queue_whatsapp_text(
        session,
        client_id=client.id,
        conversation_id=conversation.id,
        text=text,
        role=MessageRole.MANAGER,
        meta={"manager": manager.name, "manager_id": manager.id, "telegram_message_id": telegram_message_id},
        dedup_key=f"manager:{client.id}:{telegram_message_id}",
        telegram_message_id=telegram_message_id,
    )
    logger.info("manager.reply_queued", extra={"conversation_id": str(conversation.id), "client": client.slug, "outbox_id": str(outbox_id)})
    return outbox_id


def _take(session: Session, *, handover: Handover, conversation: Conversation, manager: Manager, client: Client, now: datetime) -> None:
    """The manager takes the conversation over (a button or a reply); the customer may be told who answers now."""
    lifecycle.transition(session, handover=handover, conversation=conversation, target=HandoverStatus.ACTIVE, now=now)
    handover.assigned_to, handover.assigned_to_id = manager.name, manager.id
    _event(session, handover, HandoverAction.TAKE, manager)
    topics.queue_card(session, handover)
    if clients.settings_of(client).announce_manager:
        outbox.queue_whatsapp_text(
            session,
            client_id=conversation.client_id,
            conversation_id=conversation.id,
            text=replies.MANAGER_JOINED.format(name=manager.name),
            role=MessageRole.SYSTEM,
        )
    logger.info("handover.taken", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id)})


def _event(session: Session, handover: Handover, action: HandoverAction, manager: Manager) -> None:
    session.add(HandoverEvent(handover_id=handover.id, action=action, actor_id=manager.id, actor_name=manager.name))


# --- delivery of a reply, confirmed in the topic ----------------------------------------------------------


def deliver_reply(delivery: Delivery[ManagerText], save_progress: SaveProgress) -> dict[str, Any]:
    """Send like any WhatsApp text, then confirm in the topic; the first failure is reported there at once."""
    try:
        result = outbox.deliver_whatsapp_text(delivery, save_progress)
    except Exception as exc:
        if delivery.attempts == 1:
            _notice(delivery, NOT_YET_DELIVERED)
        raise exc
    _notice(delivery, DELIVERED)
    return result


def report_given_up(delivery: Delivery[OutboxPayload], error: str) -> None:
    """A manager's reply the outbox gave up on: say so in the topic, so the manager can reach the customer otherwise."""
    if isinstance(delivery.payload, ManagerText):
        _notice(cast(Delivery[ManagerText], delivery), NOT_DELIVERED.format(error=_short(error)))


def _notice(delivery: Delivery[ManagerText], text: str) -> None:
    """A short status line in the topic, as a reply to the manager's message; queued so it is retried too."""
    if delivery.conversation_id is None:
        return
    with session_scope() as session:
        item_id = topics.queue_text(
            session,
            client_id=delivery.client.id,
            conversation_id=delivery.conversation_id,
            text=text,
            reply_to=delivery.payload.telegram_message_id,
        )
    outbox.deliver_soon(item_id)


def _short(error: str) -> str:
    return "WhatsApp не принял сообщение" if "success=false" in error else "WhatsApp недоступен"
