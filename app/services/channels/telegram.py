"""The Telegram Bot API over HTTP: forum topics, messages, buttons, pins. Owns timeouts, retries and the
translation of Bot API errors into the few cases callers act on."""

import html
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from app import slots
from app.config import settings
from app.models import Client
from app.utils import crypto
from app.utils.errors import ConfigError, ExternalServiceError
from app.utils.text import split_text

logger = logging.getLogger(__name__)

SERVICE = "telegram"
# Telegram counts a message's visible text (after its markup), in UTF-16 code units: an emoji is two.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
TOPIC_NAME_LIMIT = 128
# A 429 asking to wait longer than this is not slept on inside a job: the outbox retries later instead.
_MAX_INLINE_RETRY_AFTER = 10.0

_session = requests.Session()
_session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
_session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))


class TelegramError(ExternalServiceError):
    def __init__(self, message: str, *, code: int | None = None, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(SERVICE, message, retryable=retryable)
        self.error_code = code  # the Bot API's error_code (an HTTP status)
        self.retry_after = retry_after


class TopicNotFound(TelegramError):
    """The forum topic was deleted (or never existed): recreate it and go on."""


class MessageNotFound(TelegramError):
    """The message to edit is gone: deleted by someone, alone or with its forum topic (Telegram deletes a
    topic's messages with it and answers an edit of one of them "message to edit not found")."""


class BotBlocked(TelegramError):
    """The bot was kicked from the chat or lost its rights: nothing to retry until an operator fixes it."""


@dataclass(frozen=True)
class Bot:
    token: str

    @property
    def id(self) -> int:
        head = self.token.split(":", 1)[0]
        return int(head) if head.isdigit() else 0


def default_bot() -> Bot | None:
    return Bot(settings.telegram_bot_token.get_secret_value()) if settings.telegram_bot_token else None


def bot_for(client: Client) -> Bot:
    """The client's own bot (its token decrypted), else the deployment's default bot."""
    token = crypto.reveal(client.telegram_bot_token) or (
        settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else None
    )
    if not token:
        raise ConfigError(f"TELEGRAM_BOT_TOKEN is not set and client '{client.slug}' has no telegram bot token")
    return Bot(token)


def reachable(client: Client) -> bool:
    """Whether the client's managers can be told anything: a group to post in and a bot to post with."""
    return client.telegram_chat_id is not None and (client.telegram_bot_token is not None or settings.telegram_bot_token is not None)


def chat_for(client: Client) -> int:
    if client.telegram_chat_id is None:
        raise ConfigError(f"client '{client.slug}' has no telegram chat id (python -m app.cli client update --telegram-chat-id)")
    return client.telegram_chat_id


def escape(text: str) -> str:
    """Customer text shown in an HTML-formatted message: '<', '>' and '&' can never break it. Cut the text
    (cut()) before escaping it, never after: a cut escaped text may end inside "&amp;" or a tag."""
    return html.escape(text, quote=False)


def length(text: str) -> int:
    """A plain text's length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """Plain text cut to at most `limit` units as Telegram counts them, the cut marked with "…"."""
    if length(text) <= limit:
        return text
    kept, used = [], 1  # the "…"
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            break
        kept.append(char)
    return "".join(kept) + "…"


def split(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Plain text in parts of at most `limit` units as Telegram counts them, cut at paragraph or sentence ends."""
    parts: list[str] = []
    for part in split_text(text, limit):
        parts += [part] if length(part) <= limit else split_text(part, limit // 2)  # every char is 1 or 2 units
    return parts


def plain(markup: str) -> str:
    """The visible text of one of our HTML messages (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", markup))


_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^>]*)?>")


def call(bot: Bot, method: str, params: dict[str, Any], *, files: dict[str, tuple[str, bytes, str]] | None = None) -> Any:
    """Call a Bot API method; returns `result`. One retry on network errors, 5xx and short 429s."""
    attempts = 2
    for attempt in range(1, attempts + 1):
        try:
            with slots.waiting():
                return _call_once(bot, method, params, files)
        except TelegramError as exc:
            last = exc
            if not exc.retryable or attempt == attempts:
                break
            wait = exc.retry_after if exc.retry_after is not None else 0.5
            if wait > _MAX_INLINE_RETRY_AFTER:
                break
            logger.warning("telegram.retry", extra={"service": SERVICE, "method": method, "attempt": attempt, "wait_seconds": wait})
            with slots.waiting():
                time.sleep(wait)
    logger.error(
        "telegram.call_failed",
        extra={
            "service": SERVICE,
            "method": method,
            "error_type": type(last).__name__,
            "error_code": last.error_code,
            "error": last.message[:300],
        },
    )
    raise last


def _call_once(bot: Bot, method: str, params: dict[str, Any], files: dict[str, tuple[str, bytes, str]] | None) -> Any:
    url = f"{settings.telegram_api_url.rstrip('/')}/bot{bot.token}/{method}"
    timeout = (3.05, settings.telegram_timeout_seconds)
    try:
        if files:
            form = {k: (v if isinstance(v, str) else _json(v)) for k, v in params.items() if v is not None}
            response = _session.post(url, data=form, files=files, timeout=timeout)
        else:
            response = _session.post(url, json={k: v for k, v in params.items() if v is not None}, timeout=timeout)
    except requests.RequestException as exc:
        # Never include the URL: it carries the bot token.
        raise TelegramError(f"{method}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        raise TelegramError(f"{method}: HTTP {response.status_code}, body is not JSON", code=response.status_code) from None
    if isinstance(body, dict) and body.get("ok") is True:
        return body.get("result")
    body = body if isinstance(body, dict) else {}
    code = int(body.get("error_code") or response.status_code)
    description = str(body.get("description") or f"HTTP {response.status_code}")
    lowered = description.lower()
    if "message is not modified" in lowered:
        return None  # a double press or a repeated edit: the message already shows what we want
    if "message thread not found" in lowered or "topic_deleted" in lowered or "thread not found" in lowered:
        raise TopicNotFound(f"{method}: {description}", code=code, retryable=False)
    if "message to edit not found" in lowered:
        raise MessageNotFound(f"{method}: {description}", code=code, retryable=False)
    if code == 429:
        retry_after = float((body.get("parameters") or {}).get("retry_after") or 1)
        raise TelegramError(f"{method}: {description}", code=code, retry_after=retry_after)
    if code == 403 or "not enough rights" in lowered or "chat not found" in lowered:
        raise BotBlocked(f"{method}: {description}", code=code, retryable=False)
    raise TelegramError(f"{method}: {description}", code=code, retryable=code >= 500)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def create_topic(bot: Bot, *, chat_id: int, name: str) -> int:
    result = call(bot, "createForumTopic", {"chat_id": chat_id, "name": name[:TOPIC_NAME_LIMIT]})
    return int(result["message_thread_id"])


def _html_or_plain(bot: Bot, method: str, params: dict[str, Any]) -> Any:
    """Call with the HTML text; if Telegram cannot parse its markup (a 400 that retrying would only repeat),
    send the same words as plain text, so the message (a card with its buttons) still appears."""
    try:
        return call(bot, method, {**params, "parse_mode": "HTML"})
    except TelegramError as exc:
        if exc.error_code != 400 or "can't parse entities" not in exc.message.lower():
            raise
        logger.warning("telegram.markup_rejected", extra={"service": SERVICE, "method": method, "error": exc.message[:200]})
        return call(bot, method, {**params, "text": cut(plain(params["text"]), TEXT_LIMIT)})


def send_message(
    bot: Bot,
    *,
    chat_id: int,
    text: str,
    thread_id: int | None = None,
    reply_markup: dict[str, Any] | None = None,
    reply_to: int | None = None,
) -> int:
    """Send one HTML message (its visible text at most TEXT_LIMIT, see cut()); returns its message_id."""
    params: dict[str, Any] = {
        "chat_id": chat_id,
        "text": text,
        "message_thread_id": thread_id,
        "reply_markup": reply_markup,
        "link_preview_options": {"is_disabled": True},
    }
    if reply_to:
        params["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
    return int(_html_or_plain(bot, "sendMessage", params)["message_id"])


def send_long(bot: Bot, *, chat_id: int, text: str, thread_id: int | None = None) -> list[int]:
    """Send an HTML text that fits as one message; a longer one (written before texts were cut to fit) as
    consecutive plain-text messages: HTML cannot be split safely."""
    if length(plain(text)) <= TEXT_LIMIT:
        return [send_message(bot, chat_id=chat_id, text=text, thread_id=thread_id)]
    return [send_message(bot, chat_id=chat_id, text=escape(part), thread_id=thread_id) for part in split(plain(text))]


def edit_message(bot: Bot, *, chat_id: int, message_id: int, text: str, reply_markup: dict[str, Any] | None) -> None:
    _html_or_plain(
        bot,
        "editMessageText",
        {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "reply_markup": reply_markup or {"inline_keyboard": []},
            "link_preview_options": {"is_disabled": True},
        },
    )


def pin(bot: Bot, *, chat_id: int, message_id: int) -> None:
    call(bot, "pinChatMessage", {"chat_id": chat_id, "message_id": message_id, "disable_notification": True})


def unpin(bot: Bot, *, chat_id: int, message_id: int) -> None:
    call(bot, "unpinChatMessage", {"chat_id": chat_id, "message_id": message_id})


def send_file(
    bot: Bot, *, chat_id: int, thread_id: int | None, kind: str, filename: str, data: bytes, mimetype: str, caption: str | None
) -> int:
    """Send a customer's file into the topic (photo, voice, audio or document); the caption is plain text, cut
    to Telegram's limit."""
    method, field = {"image": ("sendPhoto", "photo"), "audio": ("sendVoice", "voice")}.get(kind, ("sendDocument", "document"))
    params: dict[str, Any] = {"chat_id": str(chat_id), "message_thread_id": str(thread_id) if thread_id else None}
    if caption:
        params["caption"] = cut(caption, CAPTION_LIMIT)
    result = call(bot, method, params, files={field: (filename, data, mimetype)})
    return int(result["message_id"])


FILE_LIMIT_BYTES = 20 * 1024 * 1024  # what a bot may download


class FileTooBig(TelegramError):
    """Telegram will not hand a bot a file over 20 MB."""


def download_file(bot: Bot, *, file_id: str, max_bytes: int = FILE_LIMIT_BYTES) -> bytes:
    """A file sent to the chat (getFile, then its bytes). The download URL carries the bot token: it is never
    logged, returned or handed on."""
    try:
        info = call(bot, "getFile", {"file_id": file_id})
    except TelegramError as exc:
        if "too big" in exc.message.lower():
            raise FileTooBig(exc.message, code=exc.error_code, retryable=False) from None
        raise
    if int(info.get("file_size") or 0) > max_bytes:
        raise FileTooBig("getFile: file is too big", retryable=False)
    url = f"{settings.telegram_api_url.rstrip('/')}/file/bot{bot.token}/{info['file_path']}"
    try:
        with slots.waiting(), _session.get(url, timeout=(3.05, settings.media_read_timeout_seconds), stream=True) as response:
            if response.status_code != 200:
                raise TelegramError(
                    f"file download: HTTP {response.status_code}", code=response.status_code, retryable=response.status_code >= 500
                )
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooBig("file download: file is too big", retryable=False)
                chunks.append(chunk)
    except requests.RequestException as exc:
        raise TelegramError(f"file download: {type(exc).__name__}") from None
    return b"".join(chunks)


def check_chat(bot: Bot, *, chat_id: int) -> list[tuple[str, bool, str]]:
    """What the operator must fix for handovers to work in this chat: (check, ok, detail) rows."""
    rows: list[tuple[str, bool, str]] = []
    me = call(bot, "getMe", {})
    rows.append(("bot token valid", True, f"@{me.get('username')}"))
    chat = call(bot, "getChat", {"chat_id": chat_id})
    rows.append(("chat is a supergroup", chat.get("type") == "supergroup", str(chat.get("type"))))
    rows.append(("forum topics enabled", bool(chat.get("is_forum")), "enable Topics in the group settings"))
    member = call(bot, "getChatMember", {"chat_id": chat_id, "user_id": me["id"]})
    is_admin = member.get("status") in ("administrator", "creator")
    rows.append(("bot is an administrator", is_admin, str(member.get("status"))))
    rows.append(("bot can manage topics", is_admin and bool(member.get("can_manage_topics", member.get("status") == "creator")), ""))
    rows.append(("bot can pin messages", is_admin and bool(member.get("can_pin_messages", member.get("status") == "creator")), ""))
    return rows


def set_webhook(bot: Bot, *, url: str, secret: str) -> None:
    call(
        bot,
        "setWebhook",
        {"url": url, "secret_token": secret, "allowed_updates": ["message", "callback_query"], "drop_pending_updates": False},
    )
