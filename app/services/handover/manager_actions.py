"""The manager's side in Telegram: button presses on a handover card, and replies in a customer's topic that go
to the customer on WhatsApp with a confirmation in the topic."""

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import (
    Client,
    Conversation,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverReason,
    HandoverStatus,
    MessageRole,
    OutboxChannel,
    OutboxKind,
    TelegramUpdate,
    User,
)
from app.schemas.telegram import TgCallbackQuery, TgUpdate
from app.services import clients
from app.services.channels import outbox, telegram
from app.services.channels.outbox import Delivery
from app.services.handover import lifecycle
from app.utils.errors import ConfigError

logger = logging.getLogger(__name__)

DELIVERED = "✅ Доставлено"
NOT_YET_DELIVERED = "⚠️ Пока не доставлено: WhatsApp не отвечает. Повторю отправку автоматически."
NOT_DELIVERED = "❌ Не доставлено клиенту: {error}. Попробуйте позже или свяжитесь с клиентом иначе."


def handle_update(update: TgUpdate) -> dict[str, Any]:
    """Handle one Telegram update exactly once; the returned dict is the webhook's response body."""
    callback, message = update.callback_query, update.message
    chat_message = callback.message if callback else message
    if chat_message is None:
        return {"ok": True}
    with session_scope() as session:
        client = session.scalar(select(Client).where(Client.telegram_chat_id == chat_message.chat.id).limit(1))
        if client is None:
            logger.info("telegram.unknown_chat", extra={"chat_id": chat_message.chat.id})
            return _answer(callback, "Этот чат не подключён", alert=True)
        try:
            bot = telegram.bot_for(client)
        except ConfigError:
            return _answer(callback, "Бот не настроен", alert=True)
        first = session.scalar(
            insert(TelegramUpdate)
            .values(bot_id=bot.id, update_id=update.update_id)
            .on_conflict_do_nothing()
            .returning(TelegramUpdate.update_id)
        )
        if first is None:
            logger.info("telegram.duplicate_update", extra={"update_id": update.update_id})
            return _answer(callback, "Уже обработано")
        if callback is not None:
            result = lifecycle.handle_callback(
                session,
                client=client,
                data=callback.data or "",
                manager_id=callback.from_user.id,
                manager_name=callback.from_user.display_name,
            )
            response = _answer(callback, result.text, alert=result.alert)
        else:
            assert message is not None
            author = message.from_user
            if author is None or author.is_bot:
                return {"ok": True}
            handle_message(
                session,
                client=client,
                thread_id=message.message_thread_id if message.is_topic_message else None,
                telegram_message_id=message.message_id,
                manager_id=author.id,
                manager_name=author.display_name,
                text=message.text or message.caption or "",
            )
            response = {"ok": True}
        queued = outbox.written(session)
    for item_id in queued:
        outbox.deliver_soon(item_id)
    return response


def _answer(callback: TgCallbackQuery | None, text: str, *, alert: bool = False) -> dict[str, Any]:
    """Answer the button press in the webhook response itself: no extra round trip, the spinner stops at once."""
    if callback is None:
        return {"ok": True}
    return {"method": "answerCallbackQuery", "callback_query_id": callback.id, "text": text[:200], "show_alert": alert}


@dataclass(frozen=True)
class ManagerMessageResult:
    status: str  # "queued" | "ignored"
    outbox_id: uuid.UUID | None = None


def handle_message(
    session: Session, *, client: Client, thread_id: int | None, telegram_message_id: int, manager_id: int, manager_name: str, text: str
) -> ManagerMessageResult:
    """Deliver a manager's reply to the customer of this topic; a reply to a pending handover takes it."""
    if thread_id is None or not text.strip() or text.startswith("/"):
        return ManagerMessageResult("ignored")
    conversation = session.scalar(
        select(Conversation).where(Conversation.client_id == client.id, Conversation.telegram_topic_id == thread_id).with_for_update()
    )
    if conversation is None:
        logger.info("manager.unknown_topic", extra={"client": client.slug, "topic_id": thread_id})
        return ManagerMessageResult("ignored")
    now = db.now(session)
    handover = lifecycle.open_handover(session, conversation.id, lock=True)
    if handover is None:
        # The manager writes first (or after the handover closed): the bot must keep quiet while they talk.
        escalation = lifecycle.escalate(session, conversation=conversation, reason=HandoverReason.MANAGER_INITIATED)
        handover = session.get(Handover, escalation.handover_id)
        assert handover is not None
    if handover.status == HandoverStatus.PENDING:
        lifecycle.take(
            session,
            handover=handover,
            conversation=conversation,
            manager_id=manager_id,
            manager_name=manager_name,
            now=now,
            settings_=clients.settings_of(client),
        )
    handover.last_activity_at = now
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.REPLY, actor_id=manager_id, actor_name=manager_name))
    phone = session.scalar(select(User.phone).where(User.id == conversation.user_id))
    assert phone is not None
    outbox_id = outbox.queue_whatsapp_text(
        session,
        client_id=client.id,
        conversation_id=conversation.id,
        phone=phone,
        text=text,
        role=MessageRole.MANAGER,
        kind=OutboxKind.MANAGER_TEXT,
        meta={"manager": manager_name, "manager_id": manager_id, "telegram_message_id": telegram_message_id},
        dedup_key=f"manager:{client.id}:{telegram_message_id}",
        extra_payload={"telegram_message_id": telegram_message_id},
    )
    logger.info("manager.reply_queued", extra={"conversation_id": str(conversation.id), "client": client.slug, "outbox_id": str(outbox_id)})
    return ManagerMessageResult("queued", outbox_id)


@outbox.handler(OutboxChannel.WHATSAPP, OutboxKind.MANAGER_TEXT)
def _deliver_manager_text(delivery: Delivery, save_progress: Any) -> dict[str, Any]:
    """Send like any WhatsApp text, then confirm in the topic; the first failure is reported there at once."""
    try:
        result = outbox.deliver_whatsapp_text(delivery, save_progress)
    except Exception as exc:
        if delivery.attempts == 1:
            _notice(delivery, NOT_YET_DELIVERED)
        raise exc
    _notice(delivery, DELIVERED)
    return result


def _on_gave_up(delivery: Delivery, error: str) -> None:
    if delivery.kind == OutboxKind.MANAGER_TEXT:
        _notice(delivery, NOT_DELIVERED.format(error=_short(error)))


outbox.gave_up_listeners.append(_on_gave_up)


def _notice(delivery: Delivery, text: str) -> None:
    """A short status line in the topic, as a reply to the manager's message; queued so it is retried too."""
    if delivery.conversation_id is None:
        return
    with session_scope() as session:
        item_id = lifecycle.queue_topic_text(
            session,
            client_id=delivery.client.id,
            conversation_id=delivery.conversation_id,
            text=text,
            reply_to=delivery.payload.get("telegram_message_id"),
        )
    outbox.deliver_soon(item_id)


def _short(error: str) -> str:
    return "WhatsApp не принял сообщение" if "success=false" in error else "WhatsApp недоступен"
