"""A manager's photo, document, voice note or video in the topic reaches the customer on WhatsApp: fetched
from Telegram, served by this service under an expiring token, downloaded by the gateway; "✅ Доставлено"
only when the gateway said so, an honest "⚠️ Не доставлено" otherwise."""

import itertools
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.config import settings
from app.db import session_scope
from app.models import Handover, HandoverStatus, MediaFile, Message, MessageRole, MessageStatus, MessageType
from app.services.channels import media_store
from fakes.telegram import make_file_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234567890
PHONE = "77015550101"
BOT_TOKEN = "100001:test-bot-token"
ANNA = make_user(501, "Анна")
_updates = itertools.count(90_000)


@pytest.fixture
def salon(make_client, chatflow, telegram, live_url, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "public_base_url", live_url)
    monkeypatch.setattr(settings, "media_store_path", tmp_path / "media")
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token=BOT_TOKEN)


@pytest.fixture
def topic(api, salon, chatflow, telegram) -> int:
    """A customer who asked for a manager: their topic."""
    api.post("/webhook/salon", json=chatflow_payload("Позовите менеджера", phone=PHONE))
    wait_until(lambda: telegram.pinned(CHAT) and chatflow.sent_texts(PHONE), message="the handover")
    return int(telegram.topics(CHAT)[0].message_thread_id)


def send_file(api, telegram, topic, kind, file, caption=None) -> int:
    update = make_file_update(next(_updates), CHAT, topic, ANNA, kind, file, caption=caption)
    response = api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    assert response.status_code == 200
    return int(update["message"]["message_id"])


def notices(telegram, topic, message_id: int) -> list[str]:
    """What the topic said in reply to the manager's message."""
    replied = [c for c in telegram.calls("sendMessage") if (c.get("reply_parameters") or {}).get("message_id") == message_id]
    return [c["text"] for c in replied]


@pytest.mark.parametrize(
    ("kind", "mime", "name", "endpoint_kind", "caption"),
    [
        ("photo", None, None, "image", None),
        ("document", "application/pdf", "Прайс.pdf", "document", "Наш прайс на декабрь"),
        ("voice", "audio/ogg", None, "audio", None),
        ("video", "video/mp4", None, "video", "Так выглядит результат"),
    ],
)
def test_a_managers_file_reaches_the_customer_and_is_confirmed(api, topic, chatflow, telegram, kind, mime, name, endpoint_kind, caption):
    data = f"{kind} bytes".encode() * 100
    message_id = send_file(api, telegram, topic, kind, telegram.add_file(kind, data, mime_type=mime, file_name=name), caption)

    [sent] = wait_until(lambda: chatflow.sent(PHONE, kind=endpoint_kind), message="the file sent")
    assert sent.media == data  # the gateway downloaded it from our URL
    assert sent.text == caption
    assert sent.media_url is not None and sent.media_url.startswith(f"{settings.public_base_url}/media/")
    assert BOT_TOKEN not in sent.media_url and "/file/bot" not in sent.media_url
    assert wait_until(lambda: notices(telegram, topic, message_id)) == ["✅ Доставлено"]
    with session_scope() as session:
        stored = session.scalar(select(Message).where(Message.role == MessageRole.MANAGER))
        assert stored is not None and stored.status == MessageStatus.SENT and stored.type != MessageType.TEXT
        assert session.scalar(select(Handover.status)) == HandoverStatus.ACTIVE  # the file was a reply: it took the handover


def test_when_the_gateway_refuses_there_is_no_confirmation_but_the_reason(api, topic, chatflow, telegram, monkeypatch):
    monkeypatch.setattr(settings, "outbox_max_attempts", 1)
    chatflow.refuse("Instance is not connected", times=None)
    message_id = send_file(api, telegram, topic, "photo", telegram.add_file("photo", b"jpeg"))
    assert wait_until(lambda: notices(telegram, topic, message_id)) == [
        "⚠️ Не доставлено клиенту: WhatsApp не принял: Instance is not connected."
    ]
    assert chatflow.sent(PHONE, kind="image") == []


def test_without_a_public_url_the_topic_says_so_once_and_nothing_is_sent(api, topic, chatflow, telegram, monkeypatch):
    monkeypatch.setattr(settings, "public_base_url", None)
    message_id = send_file(api, telegram, topic, "document", telegram.add_file("document", b"pdf", file_name="a.pdf"), "Прайс")
    [notice] = wait_until(lambda: notices(telegram, topic, message_id))
    assert notice.startswith("⚠️ Не доставлено клиенту:") and "PUBLIC_BASE_URL" in notice
    assert [m.kind for m in chatflow.sent(PHONE)] == ["text"]  # only the acknowledgement from before; no caption alone either
    assert notices(telegram, topic, message_id) == [notice]


@pytest.mark.parametrize(
    ("kind", "file_args", "reason"),
    [
        ("sticker", {"data": b"webp"}, "стикеры в WhatsApp не отправляются"),
        ("video", {"data": b"", "size": 25 * 1024 * 1024}, "файл больше 20 МБ"),
    ],
)
def test_what_cannot_reach_whatsapp_gets_an_honest_warning(api, topic, chatflow, telegram, monkeypatch, kind, file_args, reason):
    monkeypatch.setattr(settings, "outbox_max_attempts", 1)
    message_id = send_file(api, telegram, topic, kind, telegram.add_file(kind, **file_args))
    [notice] = wait_until(lambda: notices(telegram, topic, message_id))
    assert notice.startswith("⚠️ Не доставлено клиенту:") and reason in notice
    assert [m.kind for m in chatflow.sent(PHONE)] == ["text"]


def test_served_files_are_unguessable_expire_and_are_removed(api, salon, tmp_path):
    token = media_store.save(client_id=salon.id, data=b"jpeg", content_type="image/jpeg", filename="photo.jpg", purpose="manager_media")
    assert len(token) == 43
    served = api.get(f"/media/{token}")
    assert served.status_code == 200 and served.content == b"jpeg" and served.headers["content-type"] == "image/jpeg"
    assert api.get("/media/" + "A" * 43).status_code == 404
    assert api.get("/media/..%2F..%2Fetc%2Fpasswd").status_code == 404
    with session_scope() as session:
        session.execute(update(MediaFile).values(expires_at=func.now() - timedelta(seconds=1)))
    assert api.get(f"/media/{token}").status_code == 404
    assert media_store.remove_expired() == 1
    assert not (settings.media_store_path / token).exists()


def test_the_bot_token_is_never_logged(api, topic, chatflow, telegram, caplog):
    caplog.set_level(logging.DEBUG)
    message_id = send_file(api, telegram, topic, "photo", telegram.add_file("photo", b"jpeg"))
    wait_until(lambda: notices(telegram, topic, message_id))
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert BOT_TOKEN not in logged and "test-bot-token" not in logged
