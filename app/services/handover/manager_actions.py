"""What a manager does in Telegram, each update handled exactly once: a press on a handover card's buttons
(take, skip, resolve, return to the bot), or a reply in the customer's topic, which goes to the customer on
WhatsApp and is confirmed in the topic ("✅ Доставлено" only once the gateway accepted it).

A reply may be a file: a photo, document, voice note, audio or video (with or without a caption) is fetched
from Telegram, stored and served at PUBLIC_BASE_URL/media/<token> (channels/media_store.py) and sent through
ChatFlow's media endpoint, which downloads it. What cannot go (a sticker, a location, no PUBLIC_BASE_URL, a
file over Telegram's 20 MB) is answered at once with "⚠️ Не доставлено клиенту: <причина>", never ✅."""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db
from app.config import settings
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
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    TelegramUpdate,
    User,
)
from app.schemas.outbox import ManagerMedia, ManagerText, OutboxPayload, WhatsAppText
from app.schemas.telegram import TgCallbackQuery, TgFile, TgUpdate
from app.services import clients, replies
from app.services.channels import media_store, outbox, telegram, whatsapp
from app.services.channels.outbox import Delivery, SaveProgress
from app.services.handover import card, lifecycle, topics
from app.utils.errors import ConfigError, ExternalServiceError

logger = logging.getLogger(__name__)

DELIVERED = "✅ Доставлено"
NOT_YET_DELIVERED = "⚠️ Пока не доставлено: WhatsApp не отвечает. Повторю отправку автоматически."
NOT_A_MANAGER = "Нет доступа: вас нет в списке менеджеров этого чата"
NOT_DELIVERED = "⚠️ Не доставлено клиенту: {error}."
UNCERTAIN = "⚠️ Неизвестно, доставлено ли: WhatsApp не ответил на отправку. Проверьте переписку в WhatsApp, прежде чем отправлять снова."
BOT_ANSWER_UNCERTAIN = (
    "⚠️ Неизвестно, дошёл ли до клиента ответ бота (WhatsApp не ответил на отправку), повторно он не отправлен:\n"
    "«{text}»\nПроверьте переписку в WhatsApp и при необходимости напишите клиенту сами."
)
_QUOTE_CHARS = 500
# A manager's file, by its Telegram kind: how WhatsApp carries it, how it is stored.
_FILE_KINDS: dict[str, tuple[str, MessageType, str, str]] = {  # kind -> (ChatFlow kind, message type, content type, name)
    "photo": ("image", MessageType.IMAGE, "image/jpeg", "photo.jpg"),
    "document": ("document", MessageType.DOCUMENT, "application/octet-stream", "document"),
    "voice": ("audio", MessageType.AUDIO, "audio/ogg", "voice.ogg"),
    "audio": ("audio", MessageType.AUDIO, "audio/mpeg", "audio.mp3"),
    "video": ("video", MessageType.VIDEO, "video/mp4", "video.mp4"),
    "video_note": ("video", MessageType.VIDEO, "video/mp4", "video.mp4"),
    "animation": ("video", MessageType.VIDEO, "video/mp4", "animation.mp4"),
}
_CANNOT_SEND = {
    "sticker": "стикеры в WhatsApp не отправляются",
    "location": "геолокация в WhatsApp не отправляется, напишите адрес текстом",
    "venue": "место в WhatsApp не отправляется, напишите адрес текстом",
    "contact": "контакт в WhatsApp не отправляется, напишите номер текстом",
}
NO_PUBLIC_URL = "отправка файлов не настроена (нет PUBLIC_BASE_URL): отправьте текстом или с телефона компании"


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


ButtonHandler = Callable[..., CallbackAnswer]  # (session, *, client, data, manager)
TopicReader = Callable[..., bool]  # (session, *, client, thread_id, telegram_message_id, manager, text): took the message
_buttons: dict[str, ButtonHandler] = {}  # other cards' buttons, by action (the part of callback_data before "_")
_readers: list[TopicReader] = []


def register_buttons(actions: list[str], handler: ButtonHandler) -> None:
    """Have `handler` answer presses of these actions (another card's buttons in the topic; wired by the bootstrap)."""
    for action in actions:
        _buttons[action] = handler


def register_topic_reader(reader: TopicReader) -> None:
    """Show `reader` every manager's text in a topic first: when it takes the message, it is not a reply to the customer."""
    if reader not in _readers:
        _readers.append(reader)


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
            data = callback.data or ""
            result = _buttons.get(data.partition("_")[0], press)(session, client=client, data=data, manager=manager)
            response = _answer(callback, result.text, alert=result.alert)
        else:
            assert message is not None
            author = message.from_user
            if author is None or author.is_bot:
                return {"ok": True}
            if not client_settings.is_manager(author.id, author.username):
                logger.info("manager.not_allowed", extra={"client": client.slug, "user_id": author.id, "action": "reply"})
                return {"ok": True}
            thread_id = message.message_thread_id if message.is_topic_message else None
            manager = Manager(author.id, author.display_name)
            taken = message.text is not None and any(
                read(
                    session, client=client, thread_id=thread_id, telegram_message_id=message.message_id, manager=manager, text=message.text
                )
                for read in _readers
            )
            if not taken:
                reply(
                    session,
                    client=client,
                    thread_id=thread_id,
                    telegram_message_id=message.message_id,
                    manager=manager,
                    text=message.text or message.caption or "",
                    file=message.file,
                    other_kind=message.other_kind,
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
    session: Session,
    *,
    client: Client,
    thread_id: int | None,
    telegram_message_id: int,
    manager: Manager,
    text: str,
    file: tuple[str, TgFile] | None = None,
    other_kind: str | None = None,
) -> uuid.UUID | None:
    """Queue a manager's reply (text, or a file with its caption) to the customer of this topic: its outbox
    item; None when there is nothing to deliver. Replying to a pending handover takes it; writing first opens
    one, so the bot keeps quiet. What cannot be sent is said in the topic at once."""
    if thread_id is None or text.startswith("/") or not (text.strip() or file or other_kind):
        return None
    conversation = session.scalar(
        select(Conversation).where(Conversation.client_id == client.id, Conversation.telegram_topic_id == thread_id).with_for_update()
    )
    if conversation is None:
        logger.info("manager.unknown_topic", extra={"client": client.slug, "topic_id": thread_id})
        return None
    kind = file[0] if file else other_kind
    cannot = None
    if kind is not None and kind not in _FILE_KINDS:
        cannot = _CANNOT_SEND.get(kind, "такое сообщение в WhatsApp не отправляется")
    elif file is not None and not settings.public_base_url:
        cannot = NO_PUBLIC_URL
    if cannot is not None:
        topics.queue_text(
            session,
            client_id=client.id,
            conversation_id=conversation.id,
            text=NOT_DELIVERED.format(error=cannot),
            reply_to=telegram_message_id,
        )
        logger.info("manager.reply_not_sendable", extra={"client": client.slug, "kind": kind, "conversation_id": str(conversation.id)})
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
    handover.last_activity_at = handover.last_manager_reply_at = now
    _event(session, handover, HandoverAction.REPLY, manager)
    meta = {"manager": manager.name, "manager_id": manager.id, "telegram_message_id": telegram_message_id}
    dedup_key = f"manager:{client.id}:{telegram_message_id}"
    if file is not None:
        outbox_id = _queue_file(
            session, conversation=conversation, kind=file[0], file=file[1], caption=text, meta=meta, dedup_key=dedup_key
        )
    else:
        outbox_id = outbox.queue_whatsapp_text(
            session,
            client_id=client.id,
            conversation_id=conversation.id,
            text=text,
            role=MessageRole.MANAGER,
            meta=meta,
            dedup_key=dedup_key,
            telegram_message_id=telegram_message_id,
        )
    logger.info("manager.reply_queued", extra={"conversation_id": str(conversation.id), "client": client.slug, "outbox_id": str(outbox_id)})
    return outbox_id


def _queue_file(
    session: Session, *, conversation: Conversation, kind: str, file: TgFile, caption: str, meta: dict[str, Any], dedup_key: str
) -> uuid.UUID:
    """The manager's file as a message of the conversation and its outbox item, fetched from Telegram at delivery."""
    phone = session.scalar(select(User.phone).where(User.id == conversation.user_id))
    assert phone is not None
    _, message_type, _, _ = _FILE_KINDS[kind]
    message = Message(
        client_id=conversation.client_id,
        conversation_id=conversation.id,
        role=MessageRole.MANAGER,
        type=message_type,
        content=caption,
        status=MessageStatus.PENDING,
        meta={**meta, "file": kind, "file_name": file.file_name},
    )
    session.add(message)
    session.flush()
    payload = ManagerMedia(
        phone=phone,
        telegram_message_id=int(meta["telegram_message_id"]),
        telegram_kind=kind,
        file_id=file.file_id,
        file_size=file.file_size,
        mime_type=file.mime_type,
        filename=file.file_name,
        caption=caption or None,
    )
    return outbox.add(
        session,
        client_id=conversation.client_id,
        conversation_id=conversation.id,
        payload=payload,
        dedup_key=dedup_key,
        message_id=message.id,
    )


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
    return _confirmed(delivery, lambda: outbox.deliver_whatsapp_text(delivery, save_progress))


def deliver_media(delivery: Delivery[ManagerMedia], save_progress: SaveProgress) -> dict[str, Any]:
    """Fetch the manager's file from Telegram (once: a retry reuses the stored file), serve it under a token and
    have ChatFlow send it by that URL; confirmed in the topic like a text."""
    payload = delivery.payload

    def send() -> dict[str, Any]:
        chatflow_kind, _, content_type, name = _FILE_KINDS[payload.telegram_kind]
        settings.require("public_base_url")  # unset since it was queued: fail before fetching, naming the setting
        token = delivery.result.get("token")
        if not media_store.is_usable(token):
            data = telegram.download_file(telegram.bot_for(delivery.client), file_id=payload.file_id)
            token = media_store.save(
                client_id=delivery.client.id,
                data=data,
                content_type=payload.mime_type or content_type,
                filename=payload.filename or name,
                purpose="manager_media",
            )
            save_progress({"token": token})
        assert token is not None
        message_id = whatsapp.send_media(
            creds=whatsapp.credentials_for(delivery.client),
            phone=payload.phone,
            kind=chatflow_kind,
            url=media_store.url_for(token),
            caption=payload.caption,
        )
        return {"token": token, "message_ids": [message_id]}

    return _confirmed(delivery, send)


def _confirmed(delivery: Delivery[Any], send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """✅ in the topic only once the gateway accepted it; a failure that will be retried is said at once."""
    try:
        result = send()
    except Exception as exc:
        retried = isinstance(exc, ExternalServiceError) and exc.retryable and delivery.attempts < settings.outbox_max_attempts
        if delivery.attempts == 1 and retried:
            _notice(delivery, NOT_YET_DELIVERED)
        raise
    _notice(delivery, DELIVERED)
    return result


def report_given_up(delivery: Delivery[OutboxPayload], error: str) -> None:
    """A manager's reply the outbox gave up on: say so in the topic, so the manager can reach the customer otherwise."""
    if isinstance(delivery.payload, (ManagerText, ManagerMedia)):
        _notice(cast(Delivery[Any], delivery), NOT_DELIVERED.format(error=_short(error)))


def report_uncertain(delivery: Delivery[OutboxPayload], error: str) -> bool:
    """A message to the customer that may or may not have arrived (the gateway did not answer): the manager is
    told in the topic (a reply to their own message, or, for the bot's answer, while a handover is open), so
    they check WhatsApp before sending it again. False when there is no manager to tell."""
    if isinstance(delivery.payload, (ManagerText, ManagerMedia)):
        _notice(cast(Delivery[Any], delivery), UNCERTAIN)
        return True
    if delivery.conversation_id is None or not isinstance(delivery.payload, WhatsAppText):
        return False
    with session_scope() as session:
        if lifecycle.open_handover(session, delivery.conversation_id) is None:
            return False
        quoted = telegram.cut(" / ".join(delivery.payload.parts), _QUOTE_CHARS)
        text = BOT_ANSWER_UNCERTAIN.format(text=telegram.escape(quoted))
        item_id = topics.queue_text(session, client_id=delivery.client.id, conversation_id=delivery.conversation_id, text=text)
    outbox.deliver_soon(item_id)
    return True


def _notice(delivery: Delivery[Any], text: str) -> None:
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
    """The reason a manager can act on, without internals (the error may name the gateway's own words)."""
    if "PUBLIC_BASE_URL" in error:
        return NO_PUBLIC_URL
    if "too big" in error:
        return "файл больше 20 МБ (столько Telegram отдаёт ботам)"
    if error.startswith("telegram"):
        return "не удалось получить файл из Telegram"
    if "success=false" in error:
        said = error.split("success=false:", 1)[-1].strip()
        return f"WhatsApp не принял: {said[:80]}" if said and said != "None" else "WhatsApp не принял сообщение"
    return "WhatsApp недоступен"
