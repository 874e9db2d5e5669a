"""The customer's forum topic in the client's Telegram group: what is queued for it (texts, the customer's
files, the handover card), the outbox handlers that deliver those, and the topic itself, created on first
use and re-created when someone deleted it."""

import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.lock import Lock
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import slots
from app.db import session_scope
from app.models import OPEN_HANDOVER_STATUSES, Client, Conversation, Handover, Message, User
from app.redis_client import redis_client
from app.schemas.outbox import Card, TopicMedia, TopicText
from app.services.channels import outbox, telegram
from app.services.channels.media import fetch_media
from app.services.channels.outbox import Delivery, SaveProgress
from app.services.channels.telegram import TopicNotFound
from app.services.handover import card
from app.utils.errors import ConfigError, MediaRejected

logger = logging.getLogger(__name__)


# --- queued in the caller's transaction ---------------------------------------------------------------


def queue_card(session: Session, handover: Handover) -> None:
    """(Re)render the handover card in the customer's topic from the handover's state at delivery time."""
    outbox.add(session, client_id=handover.client_id, conversation_id=handover.conversation_id, payload=Card(handover_id=handover.id))


def queue_text(session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, text: str, reply_to: int | None = None) -> uuid.UUID:
    """A message into the customer's topic: HTML whose visible text fits one message (customer text cut with
    telegram.cut or split with telegram.split, then escaped: card.customer_parts does it)."""
    return outbox.add(session, client_id=client_id, conversation_id=conversation_id, payload=TopicText(text=text, reply_to=reply_to))


def queue_media(session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID) -> uuid.UUID:
    """The customer's file (photo, voice note, document) into their topic, fetched at delivery time."""
    return outbox.add(session, client_id=client_id, conversation_id=conversation_id, payload=TopicMedia(message_id=message_id))


# --- the topic -----------------------------------------------------------------------------------------


def ensure_topic(client: Client, conversation_id: uuid.UUID, *, stale: int | None = None) -> int:
    """The customer's forum topic, created on first use (and again if it was deleted: pass its id as stale)."""
    lock = redis_client.lock(f"lock:topic:{conversation_id}", timeout=30, blocking_timeout=15)
    with slots.waiting():  # its holder may be waiting for a slot to finish
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
            name = card.topic_name(user.name, user.phone)
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


def _acquire(lock: Lock) -> bool:
    try:
        return bool(lock.acquire())
    except redis.RedisError:
        return False  # without Redis a duplicate topic is possible but nothing is lost


def in_topic(delivery: Delivery[Any], send: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run `send(topic_id)`; if the topic was deleted, recreate it once and send again."""
    assert delivery.conversation_id is not None
    topic_id = ensure_topic(delivery.client, delivery.conversation_id)
    try:
        return send(topic_id)
    except TopicNotFound:
        logger.warning("telegram.topic_missing", extra={"conversation_id": str(delivery.conversation_id), "topic_id": topic_id})
        return send(ensure_topic(delivery.client, delivery.conversation_id, stale=topic_id))


# --- outbox handlers -------------------------------------------------------------------------------------


def deliver_text(delivery: Delivery[TopicText], save_progress: SaveProgress) -> dict[str, Any]:
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    text, reply_to = delivery.payload.text, delivery.payload.reply_to

    def send(topic_id: int) -> dict[str, Any]:
        if reply_to:
            ids = [telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=text, reply_to=reply_to)]
        else:
            ids = telegram.send_long(bot, chat_id=chat_id, thread_id=topic_id, text=text)
        return {"message_ids": ids, "topic_id": topic_id}

    return in_topic(delivery, send)


def deliver_media(delivery: Delivery[TopicMedia], save_progress: SaveProgress) -> dict[str, Any]:
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    with session_scope() as session:
        message = session.get(Message, delivery.payload.message_id)
        if message is None:
            return {"skipped": "message gone"}
        kind, caption, media = message.type, message.content, (message.meta or {}).get("media") or {}
    try:
        blob = fetch_media(media=media)
    except MediaRejected as exc:
        note = f"📎 Клиент прислал файл, но получить его не удалось ({exc.reason})."

        def send_note(topic_id: int) -> dict[str, Any]:
            return {"message_ids": [telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=note)]}

        return in_topic(delivery, send_note)

    def send(topic_id: int) -> dict[str, Any]:
        message_id = telegram.send_file(
            bot,
            chat_id=chat_id,
            thread_id=topic_id,
            kind=kind,
            filename=blob.filename,
            data=blob.data,
            mimetype=blob.mimetype,
            caption=caption or None,
        )
        return {"message_ids": [message_id], "topic_id": topic_id}

    return in_topic(delivery, send)


def deliver_card(delivery: Delivery[Card], save_progress: SaveProgress) -> dict[str, Any]:
    """Render the card from the handover's state now: send and pin it once, afterwards edit it in place."""
    bot, chat_id = telegram.bot_for(delivery.client), telegram.chat_for(delivery.client)
    handover_id = delivery.payload.handover_id

    def remember(message_id: int | None) -> None:
        with session_scope() as session:
            session.execute(update(Handover).where(Handover.id == handover_id).values(telegram_message_id=message_id))

    def send(topic_id: int) -> dict[str, Any]:
        with session_scope() as session:
            handover = session.get(Handover, handover_id)
            if handover is None:
                return {"skipped": "handover gone"}
            view, message_id = _card_view(session, handover), handover.telegram_message_id
        is_open = view.status in OPEN_HANDOVER_STATUSES
        log = {"handover_id": str(handover_id)}
        posted = post_card(bot, chat_id, topic_id, card.text(view), card.buttons(view), message_id, remember, log=log)
        if posted != message_id and is_open:
            telegram.pin(bot, chat_id=chat_id, message_id=posted)
        elif posted == message_id and not is_open:
            telegram.unpin(bot, chat_id=chat_id, message_id=posted)
        return {"message_id": posted, "topic_id": topic_id}

    return in_topic(delivery, send)


def post_card(
    bot: telegram.Bot,
    chat_id: int,
    topic_id: int,
    text: str,
    buttons: dict[str, Any] | None,
    message_id: int | None,
    remember: Callable[[int | None], None],
    *,
    log: dict[str, str],
) -> int:
    """A card with buttons in a topic (a handover's, a booking's): sent once (`remember` keeps its message id),
    afterwards edited in place. A card Telegram will not edit (400: unchanged, too old) stays as it is; a card
    someone deleted is forgotten and sent anew: into its topic, or (the topic deleted with it, so the send
    raises TopicNotFound) by in_topic into the topic that replaces it."""
    if message_id is None:
        message_id = telegram.send_message(bot, chat_id=chat_id, thread_id=topic_id, text=text, reply_markup=buttons)
        remember(message_id)
        return message_id
    try:
        telegram.edit_message(bot, chat_id=chat_id, message_id=message_id, text=text, reply_markup=buttons)
    except TopicNotFound:
        remember(None)
        raise
    except telegram.MessageNotFound:
        logger.warning("telegram.card_missing", extra={**log, "topic_id": topic_id})
        remember(None)
        return post_card(bot, chat_id, topic_id, text, buttons, None, remember, log=log)
    except telegram.TelegramError as exc:
        if exc.error_code != 400:
            raise
        logger.warning("telegram.card_not_editable", extra={**log, "error": exc.message[:200]})
    return message_id


def _card_view(session: Session, handover: Handover) -> card.CardView:
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    user = session.get(User, conversation.user_id)
    assert user is not None
    recent = session.execute(
        select(Message.role, Message.content)
        .where(Message.conversation_id == conversation.id, Message.role.in_(card.ROLE_ICONS), Message.content != "")
        .order_by(Message.created_at.desc())
        .limit(card.HISTORY_MESSAGES)
    ).all()
    return card.CardView(
        handover_id=handover.id,
        status=handover.status,
        reason=handover.reason,
        reason_detail=handover.reason_detail,
        outcome=handover.outcome,
        assigned_to=handover.assigned_to,
        customer_name=user.name,
        phone=user.phone,
        recent=[(role, content) for role, content in reversed(recent)],
    )
