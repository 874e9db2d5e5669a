"""Voice notes, files and bursts: one good answer per customer thought."""

import base64
import concurrent.futures
import time
from typing import Any

from sqlalchemy import select

from app.db import session_scope
from app.models import Message, MessageRole, MessageStatus
from app.services import replies
from tests.helpers import chatflow_payload, wait_until

PHONE = "77015550202"


def voice(text: str, *, url: str | None = None, **media: object) -> dict[str, Any]:
    """A voice note; the fake ElevenLabs 'hears' UTF-8 audio bytes as that text."""
    data: dict[str, Any] = {"mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 4, "fileName": None, "caption": None, **media}
    if url:
        data["url"] = url
    else:
        data["base64"] = base64.b64encode(text.encode()).decode()
    return chatflow_payload("", phone=PHONE, messageType="audio", mediaData=data)


def image(caption: str | None, url: str) -> dict[str, Any]:
    media = {"url": url, "mimetype": "image/jpeg", "fileName": "photo.jpg", "caption": caption, "size": 11}
    return chatflow_payload("", phone=PHONE, messageType="image", mediaData=media)


def stored(role: MessageRole = MessageRole.USER) -> list[Message]:
    with session_scope() as session:
        return list(session.scalars(select(Message).where(Message.role == role).order_by(Message.created_at)))


def test_voice_note_is_transcribed_and_answered(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon")
    llm.set_reply("Стрижка стоит 5000 тенге.")
    assert api.post("/webhook/salon", json=voice("Сколько стоит стрижка?")).json() == {"status": "ok"}

    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == ["Стрижка стоит 5000 тенге."]
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Сколько стоит стрижка?"
    assert elevenlabs.received_model_ids() == ["scribe_v1"]
    [message] = stored()
    assert message.type == "audio" and message.content == "Сколько стоит стрижка?"
    assert message.meta["transcript"] == "Сколько стоит стрижка?"


def test_voice_note_downloaded_from_the_gateway(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon")
    url = chatflow.host_media("voice-1.ogg", "Вы работаете в воскресенье?".encode(), "audio/ogg")
    api.post("/webhook/salon", json=voice("", url=url))
    wait_until(lambda: chatflow.sent_texts(PHONE))
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Вы работаете в воскресенье?"


def test_unrecognised_voice_note_gets_one_polite_answer(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon")
    elevenlabs.server_error(500, times=None)
    api.post("/webhook/salon", json=voice("Алло"))

    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.VOICE_NOT_RECOGNISED]
    time.sleep(0.5)
    assert len(chatflow.sent_texts(PHONE)) == 1 and llm.chat_requests() == []
    assert len(elevenlabs.requests) == 2  # one retry
    [message] = stored()
    assert message.status == MessageStatus.PROCESSED  # stored, not lost


def test_voice_from_a_host_that_is_not_allowed_is_not_fetched(api, make_client, llm, chatflow, elevenlabs, monkeypatch):
    from app.config import settings

    monkeypatch.setattr(settings, "media_allowed_hosts", ["media.chatflow.example"])
    make_client("salon")
    url = chatflow.host_media("voice-2.ogg", b"secret", "audio/ogg")
    api.post("/webhook/salon", json=voice("", url=url))
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.VOICE_NOT_RECOGNISED]
    assert not [r for r in chatflow.requests if r.path.startswith("/media/")]
    assert elevenlabs.requests == []


def test_text_and_voice_burst_is_one_turn_in_order(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon", settings={"buffer_wait_seconds": 0.6})
    api.post("/webhook/salon", json=chatflow_payload("Здравствуйте", phone=PHONE))
    time.sleep(0.1)
    api.post("/webhook/salon", json=voice("хочу записаться на маникюр"))
    time.sleep(0.1)
    api.post("/webhook/salon", json=chatflow_payload("на завтра можно?", phone=PHONE))

    wait_until(lambda: chatflow.sent_texts(PHONE))
    time.sleep(0.8)
    assert len(chatflow.sent_texts(PHONE)) == 1
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Здравствуйте\nхочу записаться на маникюр\nна завтра можно?"


def test_image_with_caption_is_text_plus_a_note(api, make_client, llm, chatflow):
    make_client("salon")
    url = chatflow.host_media("photo.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
    api.post("/webhook/salon", json=image("Сколько будет стоить такой дизайн?", url))
    wait_until(lambda: chatflow.sent_texts(PHONE))
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "[изображение] Сколько будет стоить такой дизайн?"


def test_image_without_caption_gets_a_polite_answer(api, make_client, llm, chatflow):
    make_client("salon")
    url = chatflow.host_media("photo.jpg", b"\xff\xd8\xff fake jpeg", "image/jpeg")
    api.post("/webhook/salon", json=image(None, url))
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.MEDIA_RECEIVED]
    assert llm.chat_requests() == []


def test_file_during_a_handover_goes_to_the_manager(api, make_client, llm, chatflow, telegram, elevenlabs):
    chat = -100777
    make_client("salon", telegram_chat_id=chat, telegram_bot_token="100001:test-bot-token")
    api.post("/webhook/salon", json=chatflow_payload("Позовите менеджера", phone=PHONE))
    wait_until(lambda: telegram.pinned(chat))
    url = chatflow.host_media("receipt.jpg", b"\xff\xd8\xff receipt", "image/jpeg")

    api.post("/webhook/salon", json=image("Вот чек", url))

    photos = wait_until(lambda: [m for m in telegram.messages(chat) if m.kind == "photo"], message="the photo in the topic")
    assert photos[0].file is not None and photos[0].file.data == b"\xff\xd8\xff receipt"
    assert photos[0].caption == "Вот чек"
    wait_until(lambda: any("[изображение] Вот чек" in (m.text or "") for m in telegram.messages(chat)))
    assert chatflow.sent_texts(PHONE) == [replies.HANDOVER_ACK]


def test_voice_during_a_handover_reaches_the_manager_as_audio_and_text(api, make_client, chatflow, telegram, elevenlabs, llm):
    chat = -100778
    make_client("salon", telegram_chat_id=chat, telegram_bot_token="100001:test-bot-token")
    api.post("/webhook/salon", json=chatflow_payload("Менеджер нужен", phone=PHONE))
    wait_until(lambda: telegram.pinned(chat))
    api.post("/webhook/salon", json=voice("Я опаздываю на десять минут"))
    wait_until(lambda: any(m.kind == "voice" for m in telegram.messages(chat)), message="the voice note in the topic")
    wait_until(lambda: any("Я опаздываю на десять минут" in (m.text or "") for m in telegram.messages(chat)))


def test_sticker_and_reaction_are_stored_silently(api, make_client, llm, chatflow):
    make_client("salon")
    api.post("/webhook/salon", json=chatflow_payload("", phone=PHONE, messageType="sticker", mediaData={"mimetype": "image/webp"}))
    api.post("/webhook/salon", json=chatflow_payload("👍", phone=PHONE, messageType="reactionMessage"))
    wait_until(lambda: all(m.status == MessageStatus.PROCESSED for m in stored()) and len(stored()) == 2, message="both processed")
    time.sleep(0.3)
    assert chatflow.sent_texts(PHONE) == [] and llm.chat_requests() == []


def test_location_and_contact_reach_the_model_as_notes(api, make_client, llm, chatflow):
    make_client("salon")
    api.post("/webhook/salon", json=chatflow_payload("43.2383,76.9453", phone=PHONE, messageType="locationMessage"))
    wait_until(lambda: chatflow.sent_texts(PHONE))
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "[геолокация] 43.2383,76.9453"


def test_a_cut_off_message_waits_longer_for_the_rest(api, make_client, llm, chatflow):
    """With a flat 0.5 s wait the second part (0.7 s later) would be a second turn; the comma buys time."""
    make_client("salon", settings={"buffer_wait_seconds": 0.5})
    api.post("/webhook/salon", json=chatflow_payload("Хочу записаться на маникюр,", phone=PHONE))
    time.sleep(0.7)
    api.post("/webhook/salon", json=chatflow_payload("на субботу утром", phone=PHONE))
    wait_until(lambda: chatflow.sent_texts(PHONE))
    time.sleep(1.0)
    assert len(chatflow.sent_texts(PHONE)) == 1
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Хочу записаться на маникюр,\nна субботу утром"


def test_concurrent_deliveries_of_a_burst_get_one_answer(api, make_client, llm, chatflow):
    make_client("salon", settings={"buffer_wait_seconds": 0.5})
    texts = [f"вопрос номер {i}" for i in range(5)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda t: api.post("/webhook/salon", json=chatflow_payload(t, phone=PHONE)), texts))
    wait_until(lambda: chatflow.sent_texts(PHONE))
    time.sleep(1.0)
    assert len(chatflow.sent_texts(PHONE)) == 1
    merged = llm.chat_requests()[-1]["messages"][-1]["content"].split("\n")
    assert sorted(merged) == sorted(texts)
    assert [m.content for m in stored()] == merged  # the answer saw them in the order they were stored
