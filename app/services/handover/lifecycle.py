"""The handover lifecycle: open one when a human is needed, the manager's buttons, reminders and
auto-close, and the handover card in the customer's Telegram topic (delivered through the outbox)."""

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import (
    OPEN_HANDOVER_STATUSES,
    BotStatus,
    Client,
    Conversation,
    ConversationState,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverReason,
    HandoverStatus,
    Message,
    MessageRole,
    OutboxChannel,
    OutboxKind,
    User,
)
from app.redis_client import redis_client
from app.schemas.client import ClientSettings
from app.services import clients, replies
from app.services.channels import outbox, telegram
from app.services.channels.media import fetch_media
from app.services.channels.outbox import Delivery
from app.services.channels.telegram import TopicNotFound, escape
from app.services.handover import state_machine
from app.utils.errors import ConfigError, MediaRejected
from app.utils.text import truncate

logger = logging.getLogger(__name__)

REASON_LABELS: dict[str, str] = {
    HandoverReason.HUMAN_REQUEST: "клиент просит менеджера",
    HandoverReason.FRUSTRATION: "клиент недоволен",
    HandoverReason.AI_ERROR: "бот не смог ответить (ошибка AI)",
    HandoverReason.NO_KNOWLEDGE: "бот не нашёл ответа в базе знаний",
    HandoverReason.MEDIA: "клиент прислал файл",
    HandoverReason.MANAGER_INITIATED: "менеджер написал первым",
}
STATUS_LINES = {
    HandoverStatus.PENDING: "🆘 <b>Нужен менеджер</b>",
    HandoverStatus.ACTIVE: "🟢 <b>В работе</b>",
    HandoverStatus.RESOLVED: "✅ <b>Решено</b>",
    HandoverStatus.BOT_HANDLING: "🤖 <b>Возвращено боту</b>",
    HandoverStatus.TIMEOUT: "⌛ <b>Закрыто: никто не взял</b>",
}
_CARD_HISTORY = 6
_CARD_ROLES = {MessageRole.USER: "👤", MessageRole.ASSISTANT: "🤖", MessageRole.MANAGER: "🧑‍💼"}


@dataclass(frozen=True)
class Escalation:
    handover_id: uuid.UUID
    created: bool
    cooldown: bool = False


def open_handover(session: Session, conversation_id: uuid.UUID, *, lock: bool = False) -> Handover | None:
    query = select(Handover).where(Handover.conversation_id == conversation_id, Handover.status.in_(OPEN_HANDOVER_STATUSES))
    return session.scalar(query.with_for_update() if lock else query)


def escalate(
    session: Session, *, conversation: Conversation, reason: HandoverReason, client_settings: ClientSettings | None = None
) -> Escalation:
    """Open a pending handover and mute the bot, or return the open (or just closed, within cooldown) one."""
    existing = open_handover(session, conversation.id)
    if existing is not None:
        return Escalation(existing.id, created=False)
    cooldown = client_settings.escalation_cooldown_minutes if client_settings else 0
    if cooldown:
        recent = session.scalar(
            select(Handover)
            .where(Handover.conversation_id == conversation.id, Handover.created_at > func.now() - timedelta(minutes=cooldown))
            .order_by(Handover.created_at.desc())
            .limit(1)
        )
        if recent is not None:
            return Escalation(recent.id, created=False, cooldown=True)
    handover = Handover(client_id=conversation.client_id, conversation_id=conversation.id, status=HandoverStatus.PENDING, reason=reason)
    try:
        with session.begin_nested():
            session.add(handover)
            session.flush()
    except IntegrityError:
        # Another turn opened one at the same moment; the partial unique index kept it to one.
        existing = open_handover(session, conversation.id)
        assert existing is not None
        return Escalation(existing.id, created=False)
    apply_status(conversation, HandoverStatus.PENDING)
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.CREATED, actor_name=reason))
    queue_card(session, handover)
    logger.info("handover.created", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id), "reason": reason})
    return Escalation(handover.id, created=True)


def transition(session: Session, *, handover: Handover, conversation: Conversation, target: HandoverStatus, now: datetime) -> None:
    """Move a handover to `target` (checked by the state machine) and bring the conversation along."""
    state_machine.check_transition(handover.status, target)
    handover.status = target
    handover.last_activity_at = now
    if target == HandoverStatus.ACTIVE:
        handover.taken_at = now
    elif state_machine.is_closed(target):
        handover.resolved_at = now
    apply_status(conversation, target)


def cancel(session: Session, *, handover: Handover, conversation: Conversation) -> None:
    """The customer withdrew the request while waiting ("не надо", "стоп"): close it and tell the managers."""
    transition(session, handover=handover, conversation=conversation, target=HandoverStatus.RESOLVED, now=db.now(session))
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.CANCELLED_BY_CUSTOMER))
    queue_card(session, handover)
    queue_topic_text(
        session, client_id=handover.client_id, conversation_id=conversation.id, text="🚫 Клиент отказался от связи с менеджером."
    )
    logger.info("handover.cancelled", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id)})


def mute_for_staff(session: Session, *, conversation_id: uuid.UUID, minutes: int) -> None:
    """A staff member answered from the business phone: the bot steps back for a while (an open handover stays as is)."""
    session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.state == ConversationState.BOT)
        .values(bot_status=BotStatus.MUTED, bot_muted_until=func.now() + timedelta(minutes=minutes))
    )


def mute_for_opt_out(session: Session, *, conversation: Conversation, client_settings: ClientSettings) -> None:
    """The customer asked us to stop: 30 minutes the first time, 24 hours after that (per client)."""
    minutes = client_settings.mute_minutes_first if conversation.mute_count == 0 else client_settings.mute_minutes_repeat
    conversation.bot_status = BotStatus.MUTED
    conversation.bot_muted_until = db.now(session) + timedelta(minutes=minutes)
    conversation.mute_count += 1


def apply_status(conversation: Conversation, handover_status: HandoverStatus) -> None:
    state, bot_status = state_machine.CONVERSATION_FOR_HANDOVER[handover_status]
    conversation.state = state
    conversation.bot_status = bot_status
    conversation.bot_muted_until = None


def touch(session: Session, conversation_id: uuid.UUID) -> None:
    """Activity on an open handover: reminders and auto-close count from the last one."""
    session.execute(
        update(Handover)
        .where(Handover.conversation_id == conversation_id, Handover.status.in_(OPEN_HANDOVER_STATUSES))
        .values(last_activity_at=func.now())
    )


# --- what goes to Telegram (through the outbox) ---------------------------------------------------------


def queue_card(session: Session, handover: Handover) -> None:
    """(Re)render the handover card in the customer's topic from the handover's current state."""
    outbox.add(
        session,
        client_id=handover.client_id,
        conversation_id=handover.conversation_id,
        channel=OutboxChannel.TELEGRAM,
        kind=OutboxKind.CARD,
        payload={"handover_id": str(handover.id)},
    )


def queue_topic_text(
    session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, text: str, reply_to: int | None = None
) -> uuid.UUID:
    """A message into the customer's topic (HTML: escape customer text before passing it)."""
    return outbox.add(
        session,
        client_id=client_id,
        conversation_id=conversation_id,
        channel=OutboxChannel.TELEGRAM,
        kind=OutboxKind.TOPIC_TEXT,
        payload={"text": text, "reply_to": reply_to},
    )


def queue_topic_media(session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID) -> uuid.UUID:
    """The customer's file (photo, voice note, document) into their topic, fetched at delivery time."""
    return outbox.add(
        session,
        client_id=client_id,
        conversation_id=conversation_id,
        channel=OutboxChannel.TELEGRAM,
        kind=OutboxKind.TOPIC_MEDIA,
        payload={"message_id": str(message_id)},
    )


def customer_line(name: str | None, text: str) -> str:
    who = escape(name) if name else "Клиент"
    return f"👤 <b>{who}</b>:\n{escape(text)}"


def card_text(session: Session, handover: Handover) -> str:
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    user = session.get(User, conversation.user_id)
    assert user is not None
    status = STATUS_LINES[handover.status]
    if handover.status in (HandoverStatus.ACTIVE, HandoverStatus.RESOLVED, HandoverStatus.BOT_HANDLING) and handover.assigned_to:
        status += f" · {escape(handover.assigned_to)}"
    lines = [
        status,
        f"Клиент: {escape(user.name or 'без имени')} · +{user.phone}",
        f"Причина: {REASON_LABELS.get(handover.reason, escape(handover.reason))}",
    ]
    recent = session.execute(
        select(Message.role, Message.content)
        .where(Message.conversation_id == conversation.id, Message.role.in_(_CARD_ROLES), Message.content != "")
        .order_by(Message.created_at.desc())
        .limit(_CARD_HISTORY)
    ).all()
    if recent:
        lines.append("")
        lines.append("Последние сообщения:")
        lines += [f"{_CARD_ROLES[role]} {escape(truncate(content, 400))}" for role, content in reversed(recent)]
    return truncate("\n".join(lines), telegram.TEXT_LIMIT)


def card_buttons(handover: Handover) -> dict[str, Any] | None:
    hid = handover.id
    if handover.status == HandoverStatus.PENDING:
        rows = [
            [{"text": "✋ Взять", "callback_data": f"take_{hid}"}, {"text": "⏭ Пропустить", "callback_data": f"skip_{hid}"}],
            [{"text": "✅ Решено", "callback_data": f"resolve_{hid}"}, {"text": "🤖 Вернуть боту", "callback_data": f"return_{hid}"}],
        ]
    elif handover.status == HandoverStatus.ACTIVE:
        rows = [[{"text": "✅ Решено", "callback_data": f"resolve_{hid}"}, {"text": "🤖 Вернуть боту", "callback_data": f"return_{hid}"}]]
    else:
        return None
    return {"inline_keyboard": rows}


def topic_name(user: User) -> str:
    return f"{user.name or 'Клиент'} +{user.phone}"


def ensure_topic(client: Client, conversation_id: uuid.UUID, *, stale: int | None = None) -> int:
    """The customer's forum topic, created on first use (and again if it was deleted: pass its id as stale)."""
    lock = redis_client.lock(f"lock:topic:{conversation_id}", timeout=30, blocking_timeout=15)
    acquired = _acquire(lock)
    try:
        with session_scope() as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                raise ConfigError(f"conversation {conversation_id} no longer exists")
            if conversation.telegram_topic_id and conversation.telegram_topic_id != stale:
                return conversation.telegram_topic_id
            user = session.get(User, conversation.user_id)
            assert user is not None
            name = topic_name(user)
        topic_id = telegram.create_topic(telegram.bot_for(client), chat_id=telegram.chat_for(client), name=name)
        with session_scope() as session:
            session.execute(update(Conversation).where(Conversation.id == conversation_id).values(telegram_topic_id=topic_id))
        logger.info(
            "telegram.topic_created", extra={"conversation_id": str(conversation_id), "topic_id": topic_id, "recreated": stale is not None}
        )
        return topic_id
    finally:
        if acquired:
            with contextlib.suppress(redis.RedisError):
                lock.release()


def _acquire(lock: Any) -> bool:
    try:
        return bool(lock.acquire())
    except redis.RedisError:
        return False  # without Redis a duplicate topic is possible but nothing is lost


def _in_topic(delivery: Delivery, send: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run `send(topic_id)`; if the topic was deleted, recreate it once and send again."""
    assert delivery.conversation_id is not None
    topic_id = ensure_topic(delivery.client, delivery.conversation_id)
    try:
        return send(topic_id)
    except TopicNotFound:
        logger.warning("telegram.topic_missing", extra={"conversation_id": str(delivery.conversation_id), "topic_id": topic_id})
        return send(ensure_topic(delivery.client, delivery.conversation_id, stale=topic_id))


@outbox.handler(OutboxChannel.TELEGRAM, OutboxKind.TOPIC_TEXT)
def _deliver_topic_text(delivery: Delivery, save_progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    text, reply_to = delivery.payload["text"], delivery.payload.get("reply_to")

    def send(topic_id: int) -> dict[str, Any]:
        if reply_to:
            ids = [telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=text, reply_to=reply_to)]
        else:
            ids = telegram.send_long(bot, chat_id=chat_id, thread_id=topic_id, text=text)
        return {"message_ids": ids, "topic_id": topic_id}

    return _in_topic(delivery, send)


@outbox.handler(OutboxChannel.TELEGRAM, OutboxKind.TOPIC_MEDIA)
def _deliver_topic_media(delivery: Delivery, save_progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    with session_scope() as session:
        message = session.get(Message, uuid.UUID(delivery.payload["message_id"]))
        if message is None:
            return {"skipped": "message gone"}
        kind, caption, media = message.type, message.content, (message.meta or {}).get("media") or {}
    try:
        blob = fetch_media(media=media)
    except MediaRejected as exc:
        note = f"📎 Клиент прислал файл, но получить его не удалось ({exc.reason})."

        def send_note(topic_id: int) -> dict[str, Any]:
            return {"message_ids": [telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=note)]}

        return _in_topic(delivery, send_note)

    def send(topic_id: int) -> dict[str, Any]:
        message_id = telegram.send_file(
            bot,
            chat_id=chat_id,
            thread_id=topic_id,
            kind=kind,
            filename=blob.filename,
            data=blob.data,
            mimetype=blob.mimetype,
            caption=escape(caption) if caption else None,
        )
        return {"message_ids": [message_id], "topic_id": topic_id}

    return _in_topic(delivery, send)


@outbox.handler(OutboxChannel.TELEGRAM, OutboxKind.CARD)
def _deliver_card(delivery: Delivery, save_progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Render the card from the handover's state now: send and pin it once, afterwards edit it in place."""
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    handover_id = uuid.UUID(delivery.payload["handover_id"])

    def send(topic_id: int) -> dict[str, Any]:
        with session_scope() as session:
            handover = session.get(Handover, handover_id)
            if handover is None:
                return {"skipped": "handover gone"}
            text, buttons, message_id, status = (
                card_text(session, handover),
                card_buttons(handover),
                handover.telegram_message_id,
                handover.status,
            )
        is_open = status in OPEN_HANDOVER_STATUSES
        if message_id is None:
            message_id = telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=text, reply_markup=buttons)
            with session_scope() as session:
                session.execute(update(Handover).where(Handover.id == handover_id).values(telegram_message_id=message_id))
            if is_open:
                telegram.pin(bot, chat_id=chat_id, message_id=message_id)
        else:
            try:
                telegram.edit_message(bot, chat_id=chat_id, message_id=message_id, text=text, reply_markup=buttons)
            except TopicNotFound:
                raise
            except telegram.TelegramError as exc:
                if exc.code != 400:
                    raise
                logger.warning("telegram.card_not_editable", extra={"handover_id": str(handover_id), "error": exc.message[:200]})
            if not is_open:
                telegram.unpin(bot, chat_id=chat_id, message_id=message_id)
        return {"message_id": message_id, "topic_id": topic_id}

    def send_or_recreate(topic_id: int) -> dict[str, Any]:
        try:
            return send(topic_id)
        except TopicNotFound:
            with session_scope() as session:  # the old card died with its topic
                session.execute(update(Handover).where(Handover.id == handover_id).values(telegram_message_id=None))
            raise

    return _in_topic(delivery, send_or_recreate)


# --- the manager's buttons ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackAnswer:
    text: str
    alert: bool = False


def handle_callback(session: Session, *, client: Client, data: str, manager_id: int, manager_name: str) -> CallbackAnswer:
    """take / resolve / skip / return on a handover card. Two managers pressing at once are serialised by a row lock."""
    action, _, raw_id = data.partition("_")
    try:
        handover_id = uuid.UUID(raw_id)
    except ValueError:
        return CallbackAnswer("Неизвестная кнопка", alert=True)
    handover = session.scalar(select(Handover).where(Handover.id == handover_id, Handover.client_id == client.id).with_for_update())
    if handover is None:
        return CallbackAnswer("Заявка не найдена", alert=True)
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    now = db.now(session)
    settings_ = clients.settings_of(client)
    if action == HandoverAction.SKIP:
        session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.SKIP, actor_id=manager_id, actor_name=manager_name))
        return CallbackAnswer("Пропущено: заявка осталась для других")
    if handover.status not in OPEN_HANDOVER_STATUSES:
        queue_card(session, handover)  # a stale card: bring it up to date
        return CallbackAnswer("Заявка уже закрыта", alert=True)
    if action == HandoverAction.TAKE:
        if handover.status == HandoverStatus.ACTIVE:
            if handover.assigned_to_id == manager_id:
                return CallbackAnswer("Вы уже ведёте этот диалог")
            return CallbackAnswer(f"Уже взял {handover.assigned_to}", alert=True)
        take(
            session,
            handover=handover,
            conversation=conversation,
            manager_id=manager_id,
            manager_name=manager_name,
            now=now,
            settings_=settings_,
        )
        return CallbackAnswer("Вы взяли диалог. Пишите ответ в этой теме — он уйдёт клиенту в WhatsApp.")
    if action in (HandoverAction.RESOLVE, HandoverAction.RETURN):
        target = HandoverStatus.RESOLVED if action == HandoverAction.RESOLVE else HandoverStatus.BOT_HANDLING
        if handover.assigned_to is None:
            handover.assigned_to, handover.assigned_to_id = manager_name, manager_id
        transition(session, handover=handover, conversation=conversation, target=target, now=now)
        session.add(HandoverEvent(handover_id=handover.id, action=action, actor_id=manager_id, actor_name=manager_name))
        queue_card(session, handover)
        logger.info("handover.closed", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id), "status": target})
        return CallbackAnswer("Диалог закрыт, бот снова отвечает" if action == HandoverAction.RESOLVE else "Диалог возвращён боту")
    return CallbackAnswer("Неизвестная кнопка", alert=True)


def take(
    session: Session,
    *,
    handover: Handover,
    conversation: Conversation,
    manager_id: int,
    manager_name: str,
    now: datetime,
    settings_: ClientSettings,
) -> None:
    """The manager takes the conversation over; the customer may be told who is answering now."""
    transition(session, handover=handover, conversation=conversation, target=HandoverStatus.ACTIVE, now=now)
    handover.assigned_to, handover.assigned_to_id = manager_name, manager_id
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.TAKE, actor_id=manager_id, actor_name=manager_name))
    queue_card(session, handover)
    if settings_.announce_manager:
        queue_customer_text(
            session, conversation=conversation, text=replies.MANAGER_JOINED.format(name=manager_name), role=MessageRole.SYSTEM
        )
    logger.info("handover.taken", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id)})


def queue_customer_text(
    session: Session, *, conversation: Conversation, text: str, role: MessageRole = MessageRole.ASSISTANT, reason: str | None = None
) -> uuid.UUID:
    """Store a message to the customer and put it in the outbox, in the caller's transaction."""
    phone = session.scalar(select(User.phone).where(User.id == conversation.user_id))
    assert phone is not None
    return outbox.queue_whatsapp_text(
        session,
        client_id=conversation.client_id,
        conversation_id=conversation.id,
        phone=phone,
        text=text,
        role=role,
        meta={"reason": reason} if reason else None,
    )


# --- reminders and auto-close ---------------------------------------------------------------------------


def check_pending(now: datetime | None = None) -> int:
    """Remind about pending handovers nobody took, then close them and give the customer the bot back."""
    done = 0
    with session_scope() as session:
        now = now or db.now(session)
        rows = session.execute(
            select(Handover, Client).join(Client, Client.id == Handover.client_id).where(Handover.status == HandoverStatus.PENDING)
        ).all()
        for handover, client in rows:
            settings_ = clients.settings_of(client)
            idle = now - handover.last_activity_at
            if idle >= timedelta(minutes=settings_.auto_close_minutes):
                done += _auto_close(session, handover, now)
            elif idle >= timedelta(minutes=settings_.urgent_reminder_minutes) and handover.reminders_sent < 2:
                owner = f" @{settings_.owner_username.lstrip('@')}" if settings_.owner_username else ""
                done += _remind(session, handover, f"🔴 <b>Срочно:</b> клиент ждёт менеджера уже {_minutes(idle)} мин.{owner}", level=2)
            elif idle >= timedelta(minutes=settings_.reminder_minutes) and handover.reminders_sent < 1:
                done += _remind(session, handover, f"⏰ Клиент ждёт менеджера уже {_minutes(idle)} мин. Нажмите «Взять».", level=1)
    return done


def _remind(session: Session, handover: Handover, text: str, *, level: int) -> int:
    claimed = session.scalar(
        update(Handover)
        .where(Handover.id == handover.id, Handover.reminders_sent < level, Handover.status == HandoverStatus.PENDING)
        .values(reminders_sent=level)
        .returning(Handover.id)
    )
    if claimed is None:
        return 0
    queue_topic_text(
        session, client_id=handover.client_id, conversation_id=handover.conversation_id, text=text, reply_to=handover.telegram_message_id
    )
    session.add(HandoverEvent(handover_id=handover.id, action=f"reminder_{level}"))
    logger.info("handover.reminded", extra={"handover_id": str(handover.id), "level": level})
    return 1


def _auto_close(session: Session, handover: Handover, now: datetime) -> int:
    locked = session.scalar(
        select(Handover).where(Handover.id == handover.id, Handover.status == HandoverStatus.PENDING).with_for_update(skip_locked=True)
    )
    if locked is None:
        return 0
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    transition(session, handover=locked, conversation=conversation, target=HandoverStatus.TIMEOUT, now=now)
    session.add(HandoverEvent(handover_id=locked.id, action=HandoverAction.TIMEOUT))
    queue_card(session, locked)
    queue_customer_text(session, conversation=conversation, text=replies.HANDOVER_TIMEOUT, reason="handover_timeout")
    logger.info("handover.timeout", extra={"handover_id": str(locked.id), "conversation_id": str(conversation.id)})
    return 1


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)
