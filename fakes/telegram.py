"""Fake Telegram Bot API (`/bot<token>/<method>`) with per-chat forum state, plus builders of webhook Updates."""

from __future__ import annotations

import copy
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fakes.base import FakeServer, RecordedRequest, Response, UploadedFile

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
THREAD_NOT_FOUND = "Bad Request: message thread not found"
KICKED = "Forbidden: bot was kicked from the supergroup chat"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # a bot may download files up to 20 MB
# method -> (message kind, the parameter carrying the file)
_MEDIA_METHODS = {
    "senddocument": ("document", "document"),
    "sendphoto": ("photo", "photo"),
    "sendvoice": ("voice", "voice"),
    "sendaudio": ("audio", "audio"),
    "sendvideo": ("video", "video"),
}
_HTML_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}
INSPECT_PATH = "/_fake/messages"
_DEFAULT_RIGHTS = {"can_manage_topics": True, "can_pin_messages": True, "can_delete_messages": True}


class TelegramError(Exception):
    """Raised inside handlers; becomes {"ok": false, "error_code", "description"}."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class TgTopic:
    message_thread_id: int
    name: str
    icon_color: int = 7322096
    icon_custom_emoji_id: str | None = None
    closed: bool = False


@dataclass
class TgMessage:
    """A message the bot sent (or a topic's service message), as the fake stores it."""

    message_id: int
    chat_id: int | str
    thread_id: int | None
    kind: str  # text | document | photo | voice | audio | video | service
    date: int
    text: str | None = None
    caption: str | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    file: UploadedFile | None = None  # uploaded bytes
    file_ref: str | None = None  # a file_id or URL sent instead of bytes
    edits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # the API object of a service message

    def buttons(self) -> list[dict[str, Any]]:
        """Inline keyboard buttons, row by row, flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    def callback_data(self) -> list[str]:
        """callback_data of every inline button, in order."""
        return [b["callback_data"] for b in self.buttons() if "callback_data" in b]


@dataclass
class _Chat:
    id: int | str
    title: str
    topics: dict[int, TgTopic] = field(default_factory=dict)
    messages: dict[int, TgMessage] = field(default_factory=dict)
    pinned: list[int] = field(default_factory=list)
    next_id: int = 2  # 1 is the General topic's
    kicked: bool = False


class FakeTelegram(FakeServer):
    """Bot API; the service's TELEGRAM_API_URL is fake.url. Every chat is a forum supergroup the bot administers."""

    name = "telegram"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        token: str | None = None,
        bot_id: int = 7000000001,
        bot_username: str = "truffles_test_bot",
        bot_admin: bool = True,
        bot_rights: dict[str, bool] | None = None,
        chat_title: str = "Truffles managers",
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.token = token  # None: any token is accepted
        self.bot_user = {"id": bot_id, "is_bot": True, "first_name": "Truffles", "username": bot_username}
        self.bot_admin = bot_admin
        self.bot_rights = {**_DEFAULT_RIGHTS, **(bot_rights or {})}
        self.chat_title = chat_title
        self._chats: dict[int | str, _Chat] = {}
        self._callback_answers: list[dict[str, Any]] = []
        self._webhook: dict[str, Any] = {"url": "", "secret_token": None, "allowed_updates": None}
        self._files: dict[str, tuple[str, bytes, int]] = {}  # file_id -> (file_path, bytes, size Telegram reports)
        self._methods = {name[3:]: getattr(self, name) for name in dir(self) if name.startswith("_m_")}

    def reset_state(self) -> None:
        self._files.clear()
        self._chats.clear()
        self._callback_answers.clear()
        self._webhook = {"url": "", "secret_token": None, "allowed_updates": None}

    # --- faults and out-of-band changes ------------------------------------------------------------------
    def rate_limit(self, *, retry_after: int = 3, times: int | None = 1, method: str | None = None) -> None:
        """429 with parameters.retry_after, for the next `times` calls (of `method`, e.g. "sendMessage")."""
        body = {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        }
        self.fail(429, body, times=times, path=f"/{method}" if method else None, headers={"Retry-After": str(retry_after)})

    def kick_bot(self, chat_id: int | str) -> None:
        """Every call about this chat answers 403 "bot was kicked" until unkick_bot."""
        with self._lock:
            self._chat(chat_id).kicked = True

    def unkick_bot(self, chat_id: int | str) -> None:
        with self._lock:
            self._chat(chat_id).kicked = False

    def create_topic(self, chat_id: int | str, name: str) -> int:
        """Create a topic as if a manager had; returns its message_thread_id."""
        with self._lock:
            return self._new_topic(self._chat(chat_id), name, None).message_thread_id

    def delete_topic(self, chat_id: int | str, thread_id: int) -> None:
        """Delete a topic as if a manager had, its messages with it, as Telegram does: sends into it then fail with
        "message thread not found", edits of a message that was in it with "message to edit not found"."""
        with self._lock:
            self._drop_topic(self._chat(chat_id), thread_id)

    def add_file(
        self, kind: str, data: bytes, *, mime_type: str | None = None, file_name: str | None = None, size: int | None = None
    ) -> Any:
        """A file as if a user had sent it: the File object(s) to put in an update (a photo: a list of sizes).
        `size` overrides the reported file_size (a file over the 20 MB a bot may download, without the bytes)."""
        unique = secrets.token_hex(6)
        file_id = f"AgAC{kind[:2]}{unique}"
        folder = {"photo": "photos", "voice": "voice", "video": "videos", "video_note": "video_notes", "audio": "music"}.get(
            kind, "documents"
        )
        path = f"{folder}/file_{len(self._files)}{_suffix(mime_type, file_name)}"
        with self._lock:
            self._files[file_id] = (path, data, size if size is not None else len(data))
        base: dict[str, Any] = {"file_id": file_id, "file_unique_id": unique, "file_size": size if size is not None else len(data)}
        if kind == "photo":
            return [{**base, "file_id": f"{file_id}s", "file_size": 100, "width": 90, "height": 90}, {**base, "width": 1280, "height": 960}]
        if mime_type:
            base["mime_type"] = mime_type
        if file_name:
            base["file_name"] = file_name
        if kind in ("voice", "audio", "video", "video_note"):
            base["duration"] = 3
        return base

    # --- inspection --------------------------------------------------------------------------------------
    def topics(self, chat_id: int | str) -> list[TgTopic]:
        """Existing topics of the chat, in creation order."""
        with self._lock:
            return copy.deepcopy(list(self._chat(chat_id).topics.values()))

    def messages(self, chat_id: int | str, thread_id: int | None = None) -> list[TgMessage]:
        """Messages (not deleted, no service messages) in the chat, or in one topic, oldest first."""
        with self._lock:
            items = [m for m in self._chat(chat_id).messages.values() if m.kind != "service"]
            return copy.deepcopy([m for m in items if thread_id is None or m.thread_id == thread_id])

    def message(self, chat_id: int | str, message_id: int) -> TgMessage | None:
        """One stored message, or None if it does not exist (any more)."""
        with self._lock:
            return copy.deepcopy(self._chat(chat_id).messages.get(message_id))

    def pinned(self, chat_id: int | str) -> list[int]:
        """Pinned message ids, oldest pin first."""
        with self._lock:
            return list(self._chat(chat_id).pinned)

    def callback_answers(self) -> list[dict[str, Any]]:
        """answerCallbackQuery calls: {callback_query_id, text, show_alert, url, cache_time}."""
        with self._lock:
            return copy.deepcopy(self._callback_answers)

    def webhook(self) -> dict[str, Any]:
        """The last setWebhook: {url, secret_token, allowed_updates} (url "" when deleted)."""
        with self._lock:
            return dict(self._webhook)

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Params of every answered call of a method (case-insensitive), failed ones included."""
        method = method.lower()
        return [r.params for r in self.requests if r.status is not None and r.path.rsplit("/", 1)[-1].lower() == method]

    # --- dispatch ----------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str | None) -> Response:
        descriptions = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}
        description = message or descriptions.get(status, "Internal Server Error" if status >= 500 else f"Error {status}")
        return Response(status, {"ok": False, "error_code": status, "description": description})

    def handle(self, request: RecordedRequest) -> Response:
        if request.path == INSPECT_PATH:
            return self._inspect(request.params)
        download = re.fullmatch(r"/file/bot([^/]+)/(.+)", request.path)
        if download:
            return self._download(*download.groups())
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", request.path)
        if not match:
            return self.error_response(404, "Not Found")
        token, method = match.groups()
        if self.token is not None and token != self.token:
            return self.error_response(401, "Unauthorized")
        handler = self._methods.get(method.lower())
        if handler is None:
            return self.error_response(404, "Not Found")
        params = {k: _decode_json_param(k, v) for k, v in request.params.items()}
        try:
            with self._lock:
                result = handler(params, request.files)
        except TelegramError as exc:
            body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            return Response(exc.code, body)
        if isinstance(result, tuple):  # (result, description)
            return Response(200, {"ok": True, "result": result[0], "description": result[1]})
        return Response(200, {"ok": True, "result": result})

    def _inspect(self, params: dict[str, Any]) -> Response:
        """GET /_fake/messages?chat_id=C[&thread_id=T]: what the managers' group shows, for `simulate` in another
        process (the bot's messages as plain text, their buttons, edits and pins; not part of the Bot API)."""
        if params.get("chat_id") in (None, ""):
            return self.error_response(400, "chat_id is required")
        thread_id = _opt_int(params.get("thread_id"))
        with self._lock:
            chat = self._chat(params["chat_id"])
            topics = {topic.message_thread_id: topic.name for topic in chat.topics.values()}
            rows = [
                {
                    "message_id": m.message_id,
                    "thread_id": m.thread_id,
                    "topic": topics.get(m.thread_id or 0),
                    "kind": m.kind,
                    "text": _visible(m.text if m.text is not None else m.caption or "", m.parse_mode),
                    "buttons": [button.get("text", "") for button in m.buttons()],
                    "edits": m.edits,
                    "pinned": m.message_id in chat.pinned,
                }
                for m in chat.messages.values()
                if m.kind != "service" and (thread_id is None or m.thread_id == thread_id)
            ]
        return Response(200, {"ok": True, "result": rows})

    def _download(self, token: str, path: str) -> Response:
        """GET /file/bot<token>/<file_path>: the bytes of a file getFile described."""
        if self.token is not None and token != self.token:
            return self.error_response(401, "Unauthorized")
        with self._lock:
            found = next((data for file_path, data, _ in self._files.values() if file_path == path), None)
        if found is None:
            return self.error_response(404, "Not Found")
        return Response(200, found, {"Content-Type": "application/octet-stream"})

    # --- state helpers (called with the lock held) --------------------------------------------------------
    def _chat(self, chat_id: Any) -> _Chat:
        key = _chat_key(chat_id)
        chat = self._chats.get(key)
        if chat is None:
            chat = self._chats[key] = _Chat(key, self.chat_title)
        return chat

    def _chat_for(self, params: dict[str, Any]) -> _Chat:
        if params.get("chat_id") in (None, ""):
            raise TelegramError(400, "Bad Request: chat_id is empty")
        chat = self._chat(params["chat_id"])
        if chat.kicked:
            raise TelegramError(403, KICKED)
        return chat

    def _thread_for(self, chat: _Chat, params: dict[str, Any]) -> int | None:
        thread_id = _opt_int(params.get("message_thread_id"))
        if thread_id is not None and thread_id not in chat.topics:
            raise TelegramError(400, THREAD_NOT_FOUND)
        return thread_id

    def _message_for(self, chat: _Chat, params: dict[str, Any], missing: str) -> TgMessage:
        message = chat.messages.get(_opt_int(params.get("message_id")) or 0)
        if message is None:
            raise TelegramError(400, f"Bad Request: {missing}")
        return message

    def _require_right(self, right: str, description: str) -> None:
        if not self.bot_admin or not self.bot_rights.get(right):
            raise TelegramError(400, f"Bad Request: {description}")

    def _new_message(self, chat: _Chat, thread_id: int | None, kind: str, **fields: Any) -> TgMessage:
        message = TgMessage(chat.next_id, chat.id, thread_id, kind, int(time.time()), **fields)
        chat.messages[message.message_id] = message
        chat.next_id += 1
        return message

    def _new_topic(self, chat: _Chat, name: str, icon_color: Any) -> TgTopic:
        topic = TgTopic(chat.next_id, name, _opt_int(icon_color) or 7322096)
        chat.topics[topic.message_thread_id] = topic
        self._new_message(
            chat, topic.message_thread_id, "service", extra={"forum_topic_created": {"name": name, "icon_color": topic.icon_color}}
        )
        return topic

    def _drop_topic(self, chat: _Chat, thread_id: int) -> None:
        if chat.topics.pop(thread_id, None) is None:
            raise TelegramError(400, THREAD_NOT_FOUND)
        gone = {i for i, m in chat.messages.items() if m.thread_id == thread_id}
        chat.messages = {i: m for i, m in chat.messages.items() if i not in gone}
        chat.pinned = [i for i in chat.pinned if i not in gone]

    def _api_message(self, message: TgMessage) -> dict[str, Any]:
        """The Message object Telegram returns for a stored message."""
        out: dict[str, Any] = {
            "message_id": message.message_id,
            "from": self.bot_user,
            "chat": {"id": message.chat_id, "title": self.chat_title, "type": "supergroup", "is_forum": True},
            "date": message.date,
        }
        if message.thread_id is not None:
            out.update(message_thread_id=message.thread_id, is_topic_message=True)
        if message.edits:
            out["edit_date"] = int(time.time())
        if message.text is not None:
            out["text"] = message.text
        if message.caption is not None:
            out["caption"] = message.caption
        if message.reply_markup:
            out["reply_markup"] = message.reply_markup
        out.update(message.extra)
        return out

    # --- methods (params, files) -> result --------------------------------------------------------------
    def _m_getme(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def _m_getfile(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        file_id = str(p.get("file_id") or "")
        known = self._files.get(file_id) or self._files.get(file_id.removesuffix("s"))
        if known is None:
            raise TelegramError(400, "Bad Request: invalid file_id")
        path, data, size = known
        if file_id.endswith("s") and file_id.removesuffix("s") in self._files:
            data = data[:100]  # the small size of a photo
        if size > DOWNLOAD_LIMIT:
            raise TelegramError(400, "Bad Request: file is too big")
        return {"file_id": file_id, "file_unique_id": file_id[-12:], "file_size": size, "file_path": path}

    def _m_getchat(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        return {"id": chat.id, "title": chat.title, "type": "supergroup", "is_forum": True}

    def _m_getchatmember(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        self._chat_for(p)
        user_id = _opt_int(p.get("user_id"))
        if user_id is None:
            raise TelegramError(400, "Bad Request: user_id is empty")
        if user_id != self.bot_user["id"]:
            return {"status": "member", "user": {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}}
        if not self.bot_admin:
            return {"status": "member", "user": self.bot_user}
        return {
            "status": "administrator",
            "user": self.bot_user,
            "can_be_edited": False,
            "is_anonymous": False,
            "can_manage_chat": True,
            "can_change_info": False,
            "can_invite_users": True,
            "can_restrict_members": False,
            "can_promote_members": False,
            "can_manage_video_chats": False,
            **self.bot_rights,
        }

    def _m_createforumtopic(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        self._require_right("can_manage_topics", "not enough rights to create a topic")
        name = str(p.get("name") or "")
        if not 1 <= len(name) <= 128:
            raise TelegramError(400, "Bad Request: TOPIC_NAME_INVALID")
        topic = self._new_topic(chat, name, p.get("icon_color"))
        return {"message_thread_id": topic.message_thread_id, "name": topic.name, "icon_color": topic.icon_color}

    def _topic_for(self, p: dict[str, Any], right: str = "can_manage_topics") -> TgTopic:
        chat = self._chat_for(p)
        self._require_right(right, "not enough rights to manage topics")
        topic = chat.topics.get(_opt_int(p.get("message_thread_id")) or 0)
        if topic is None:
            raise TelegramError(400, THREAD_NOT_FOUND)
        return topic

    def _m_editforumtopic(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        topic = self._topic_for(p)
        name = p.get("name", topic.name) or topic.name
        emoji = p.get("icon_custom_emoji_id", topic.icon_custom_emoji_id)
        if (name, emoji) == (topic.name, topic.icon_custom_emoji_id):
            raise TelegramError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.name, topic.icon_custom_emoji_id = name, emoji
        return True

    def _set_closed(self, p: dict[str, Any], closed: bool) -> Any:
        topic = self._topic_for(p)
        if topic.closed == closed:
            raise TelegramError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = closed
        return True

    def _m_closeforumtopic(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._set_closed(p, True)

    def _m_reopenforumtopic(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._set_closed(p, False)

    def _m_deleteforumtopic(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        topic = self._topic_for(p, "can_delete_messages")
        self._drop_topic(self._chat(p["chat_id"]), topic.message_thread_id)
        return True

    def _m_sendmessage(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        thread_id = self._thread_for(chat, p)
        text = _check_text(p.get("text"), p.get("parse_mode"), TEXT_LIMIT, "message text is empty", "message is too long")
        markup = _check_markup(p.get("reply_markup"))
        message = self._new_message(chat, thread_id, "text", text=text, parse_mode=p.get("parse_mode"), reply_markup=markup)
        return self._api_message(message)

    def _send_media(self, method: str, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        kind, param = _MEDIA_METHODS[method]
        chat = self._chat_for(p)
        thread_id = self._thread_for(chat, p)
        upload = files.get(param)
        ref = p.get(param) if isinstance(p.get(param), str) and p.get(param) else None
        if upload is None and ref is None:
            raise TelegramError(400, f"Bad Request: there is no {param} in the request")
        caption = p.get("caption")
        if caption:
            caption = _check_text(caption, p.get("parse_mode"), CAPTION_LIMIT, "", "message caption is too long")
        message = self._new_message(
            chat,
            thread_id,
            kind,
            caption=caption or None,
            parse_mode=p.get("parse_mode"),
            reply_markup=_check_markup(p.get("reply_markup")),
            file=upload,
            file_ref=ref,
            extra={kind: _file_object(kind, upload)},
        )
        return self._api_message(message)

    def _m_senddocument(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._send_media("senddocument", p, files)

    def _m_sendphoto(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._send_media("sendphoto", p, files)

    def _m_sendvoice(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._send_media("sendvoice", p, files)

    def _m_sendaudio(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._send_media("sendaudio", p, files)

    def _m_sendvideo(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self._send_media("sendvideo", p, files)

    def _m_sendchataction(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        self._thread_for(self._chat_for(p), p)
        return True

    def _m_editmessagetext(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        message = self._message_for(chat, p, "message to edit not found")
        if message.kind != "text":
            raise TelegramError(400, "Bad Request: there is no text in the message to edit")
        text = _check_text(p.get("text"), p.get("parse_mode"), TEXT_LIMIT, "message text is empty", "MESSAGE_TOO_LONG")
        markup = _check_markup(p.get("reply_markup"))  # omitting it removes the keyboard, as on the real API
        if text == message.text and markup == message.reply_markup:
            raise TelegramError(400, NOT_MODIFIED)
        message.text, message.reply_markup, message.parse_mode = text, markup, p.get("parse_mode")
        message.edits += 1
        return self._api_message(message)

    def _m_editmessagereplymarkup(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        message = self._message_for(chat, p, "message to edit not found")
        markup = _check_markup(p.get("reply_markup"))
        if markup == message.reply_markup:
            raise TelegramError(400, NOT_MODIFIED)
        message.reply_markup = markup
        message.edits += 1
        return self._api_message(message)

    def _m_deletemessage(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        message = self._message_for(chat, p, "message to delete not found")
        del chat.messages[message.message_id]
        chat.pinned = [i for i in chat.pinned if i != message.message_id]
        return True

    def _m_pinchatmessage(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        self._require_right("can_pin_messages", "not enough rights to manage pinned messages in the chat")
        message = self._message_for(chat, p, "message to pin not found")
        chat.pinned = [i for i in chat.pinned if i != message.message_id] + [message.message_id]
        return True

    def _m_unpinchatmessage(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(p)
        self._require_right("can_pin_messages", "not enough rights to manage pinned messages in the chat")
        message_id = _opt_int(p.get("message_id"))
        if message_id is None:
            chat.pinned = chat.pinned[:-1]
        elif message_id in chat.pinned:
            chat.pinned.remove(message_id)
        elif message_id not in chat.messages:
            raise TelegramError(400, "Bad Request: message to unpin not found")
        return True

    def _m_unpinallforumtopicmessages(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        topic = self._topic_for(p, "can_pin_messages")
        chat = self._chat(p["chat_id"])
        chat.pinned = [i for i in chat.pinned if chat.messages[i].thread_id != topic.message_thread_id]
        return True

    def _m_unpinallchatmessages(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        self._chat_for(p).pinned = []
        return True

    def _m_answercallbackquery(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        if not p.get("callback_query_id"):
            raise TelegramError(400, "Bad Request: QUERY_ID_INVALID")
        text = p.get("text")
        if text is not None and len(str(text)) > 200:
            raise TelegramError(400, "Bad Request: MESSAGE_TOO_LONG")
        self._callback_answers.append(
            {
                "callback_query_id": str(p["callback_query_id"]),
                "text": text,
                "show_alert": _bool(p.get("show_alert")),
                "url": p.get("url"),
                "cache_time": _opt_int(p.get("cache_time")),
            }
        )
        return True

    def _m_setwebhook(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        url = str(p.get("url") or "")
        if url and not url.startswith("https://") and not url.startswith("http://"):
            raise TelegramError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        self._webhook = {"url": url, "secret_token": p.get("secret_token"), "allowed_updates": p.get("allowed_updates")}
        return True, "Webhook was set" if url else "Webhook was deleted"

    def _m_deletewebhook(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        self._webhook = {"url": "", "secret_token": None, "allowed_updates": None}
        return True, "Webhook was deleted"

    def _m_getwebhookinfo(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        info: dict[str, Any] = {"url": self._webhook["url"], "has_custom_certificate": False, "pending_update_count": 0}
        if self._webhook["url"]:
            info["max_connections"] = 40
            info["ip_address"] = "127.0.0.1"
        if self._webhook["allowed_updates"]:
            info["allowed_updates"] = self._webhook["allowed_updates"]
        return info


# --- Update builders: what Telegram POSTs to the bot's webhook ---------------------------------------------
def make_user(user_id: int, first_name: str = "Менеджер", last_name: str | None = None, username: str | None = None) -> dict[str, Any]:
    """A Telegram User object of a human."""
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if last_name:
        user["last_name"] = last_name
    if username:
        user["username"] = username
    user["language_code"] = "ru"
    return user


def make_message_update(
    update_id: int,
    chat_id: int,
    thread_id: int | None,
    from_user: dict[str, Any] | int,
    text: str,
    *,
    message_id: int | None = None,
    chat_title: str = "Truffles managers",
    topic_name: str = "Topic",
) -> dict[str, Any]:
    """An Update with a manager's text message, in a forum topic when thread_id is given."""
    sender = make_user(from_user) if isinstance(from_user, int) else from_user
    chat = _update_chat(chat_id, chat_title)
    message: dict[str, Any] = {
        "message_id": message_id or 100000 + update_id % 100000,
        "from": sender,
        "chat": chat,
        "date": int(time.time()),
    }
    if thread_id is not None:
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
        # Telegram marks a plain message in a topic as a reply to the topic's creation message.
        message["reply_to_message"] = {
            "message_id": thread_id,
            "from": sender,
            "chat": chat,
            "date": int(time.time()) - 3600,
            "message_thread_id": thread_id,
            "forum_topic_created": {"name": topic_name, "icon_color": 7322096},
            "is_topic_message": True,
        }
    message["text"] = text
    return {"update_id": update_id, "message": message}


def make_file_update(
    update_id: int, chat_id: int, thread_id: int, from_user: dict[str, Any] | int, kind: str, file: Any, *, caption: str | None = None
) -> dict[str, Any]:
    """An Update with a manager's file (FakeTelegram.add_file) in a forum topic, with or without a caption."""
    update = make_message_update(update_id, chat_id, thread_id, from_user, "")
    message = update["message"]
    del message["text"]
    message[kind] = file
    if caption:
        message["caption"] = caption
    return update


def make_callback_update(
    update_id: int,
    chat_id: int,
    message_id: int,
    thread_id: int | None,
    from_user: dict[str, Any] | int,
    data: str,
    *,
    message_text: str = "Новая заявка",
    reply_markup: dict[str, Any] | None = None,
    bot_user: dict[str, Any] | None = None,
    chat_title: str = "Truffles managers",
) -> dict[str, Any]:
    """An Update with a button press on the bot's message `message_id`."""
    sender = make_user(from_user) if isinstance(from_user, int) else from_user
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": bot_user or {"id": 7000000001, "is_bot": True, "first_name": "Truffles", "username": "truffles_test_bot"},
        "chat": _update_chat(chat_id, chat_title),
        "date": int(time.time()) - 60,
    }
    if thread_id is not None:
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
    message["text"] = message_text
    if reply_markup:
        message["reply_markup"] = reply_markup
    return {
        "update_id": update_id,
        "callback_query": {
            "id": str(secrets.randbits(63)),
            "from": sender,
            "message": message,
            "chat_instance": str(abs(chat_id) * 7919),
            "data": data,
        },
    }


def _update_chat(chat_id: int, title: str) -> dict[str, Any]:
    return {"id": chat_id, "title": title, "is_forum": True, "type": "supergroup"}


# --- parameter parsing and validation ----------------------------------------------------------------------
def _chat_key(chat_id: Any) -> int | str:
    try:
        return int(chat_id)
    except (TypeError, ValueError):
        return str(chat_id)


def _opt_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TelegramError(400, f"Bad Request: invalid integer {value!r}") from None


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _decode_json_param(name: str, value: Any) -> Any:
    # Form-encoded calls carry objects such as reply_markup as JSON strings.
    if name in ("reply_markup", "allowed_updates", "reply_parameters", "link_preview_options") and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise TelegramError(400, f"Bad Request: can't parse {name} JSON object") from None
    return value


def _check_text(text: Any, parse_mode: Any, limit: int, empty: str, too_long: str) -> str:
    value = "" if text is None else str(text)
    visible = _check_entities(value, parse_mode)
    if not visible.strip() and empty:
        raise TelegramError(400, f"Bad Request: {empty}")
    if len(visible.encode("utf-16-le")) // 2 > limit:  # Telegram counts UTF-16 code units
        raise TelegramError(400, f"Bad Request: {too_long}")
    return value


def _check_entities(text: str, parse_mode: Any) -> str:
    """Reject markup the real API cannot parse; returns the visible text."""
    mode = str(parse_mode or "").lower()
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        reserved = re.search(r"(?<!\\)[#+\-=|{}.!]", text)
        if reserved:
            char = reserved.group()
            raise TelegramError(
                400, f"Bad Request: can't parse entities: Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
    return text


_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);?")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _visible(text: str, parse_mode: Any) -> str:
    """A stored message as a person reads it (it was accepted, so its markup parses)."""
    return _parse_html(text) if str(parse_mode or "").lower() == "html" else text


def _decode_entity(match: re.Match[str]) -> str:
    # As the Bot API (tdlib's parse_html): only these names and numeric references are entities, the ';' is
    # optional, and any other '&' is a literal character, never an error.
    name = match.group(1)
    if name.startswith("#"):
        code = int(name[2:], 16) if name[1:2].lower() == "x" else int(name[1:])
        return chr(code) if 0 < code < 0x10FFFF else match.group(0)
    return _NAMED.get(name, match.group(0))


def _parse_html(text: str) -> str:
    """The visible text of an HTML message, or the error the Bot API answers for its markup (tdlib's parse_html:
    unsupported, unclosed and unmatched tags; '&' is lenient, see _decode_entity)."""

    def fail(reason: str) -> TelegramError:
        return TelegramError(400, f"Bad Request: can't parse entities: {reason}")

    def offset(index: int) -> int:
        return len(text[:index].encode())

    visible: list[str] = []
    open_tags: list[str] = []
    i, size = 0, len(text)
    while i < size:
        if text[i] != "<":
            end = text.find("<", i)
            end = size if end < 0 else end
            visible.append(_ENTITY.sub(_decode_entity, text[i:end]))
            i = end
            continue
        begin = i
        i += 1
        closing = i < size and text[i] == "/"
        if closing:
            i += 1
        name_end = i
        while name_end < size and not text[name_end].isspace() and text[name_end] != ">":
            name_end += 1
        name = text[i:name_end].lower()
        close = text.find(">", name_end)
        if closing:
            if not open_tags:
                raise fail(f"Unexpected end tag at byte offset {offset(begin)}")
            if close < 0 or text[name_end:close].strip():
                raise fail(f"Unclosed end tag at byte offset {offset(begin)}")
            if name != open_tags[-1]:
                raise fail(f'Unmatched end tag at byte offset {offset(begin)}, expected "</{open_tags[-1]}>", found "</{name}>"')
            open_tags.pop()
        else:
            if name not in _HTML_TAGS:
                raise fail(f'Unsupported start tag "{name}" at byte offset {offset(begin)}')
            if close < 0:
                raise fail(f"Unclosed start tag at byte offset {offset(begin)}")
            open_tags.append(name)
        i = close + 1
    if open_tags:
        raise fail(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(visible)


def _check_markup(markup: Any) -> dict[str, Any] | None:
    if not markup:
        return None
    if not isinstance(markup, dict):
        raise TelegramError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return markup  # other keyboard kinds are stored as given
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise TelegramError(400, 'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
    if not any(rows):
        return None  # an empty keyboard is no keyboard
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise TelegramError(400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= 64:
            raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
        if data is None and not any(k in button for k in ("url", "switch_inline_query", "web_app", "login_url", "copy_text", "pay")):
            raise TelegramError(
                400, "Bad Request: can't parse inline keyboard button: InlineKeyboardButton must have exactly one optional field"
            )
    return markup


def _suffix(mime_type: str | None, file_name: str | None) -> str:
    if file_name and "." in file_name:
        return "." + file_name.rsplit(".", 1)[1]
    return {"image/jpeg": ".jpg", "audio/ogg": ".oga", "video/mp4": ".mp4", "application/pdf": ".pdf"}.get(mime_type or "", ".jpg")


def _file_object(kind: str, upload: UploadedFile | None) -> Any:
    unique = secrets.token_hex(6)
    base: dict[str, Any] = {"file_id": f"BQAC{unique}", "file_unique_id": unique}
    if upload is not None:
        base["file_size"] = len(upload.data)
        base["mime_type"] = upload.content_type or "application/octet-stream"
    if kind == "photo":
        return [{**base, "width": 1280, "height": 960}]
    if kind == "document":
        base["file_name"] = (upload.filename if upload else None) or "file"
    if kind in ("voice", "audio", "video"):
        base["duration"] = 1
    return base
