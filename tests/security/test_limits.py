"""Finding 5: nothing limited model calls, transcriptions or escalations, and a voice note without a declared
duration was transcribed (and billed) whatever its length. Now the limits are counted in Redis; going over
one skips only the expensive step, the customer is told once, the operator alerted once, nothing is lost."""

import base64
import io
import wave

import pytest
from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.models import Conversation, Handover, HandoverStatus, Message, MessageRole
from app.services import replies
from app.services.handover import lifecycle
from app.services.operations import alerts
from tests.helpers import chatflow_payload, wait_until

PHONE = "77015550606"


def _say(api, text, **overrides):
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=PHONE, **overrides)).status_code == 200


def _voice(data: bytes, **media):
    body = {"base64": base64.b64encode(data).decode(), "mimetype": "audio/ogg", "ptt": True, **media}
    return {"messageType": "audio", "mediaData": body}


def _stored() -> int:
    with session_scope() as session:
        return len(list(session.scalars(select(Message.id).where(Message.role == MessageRole.USER))))


def _limit_alerts() -> list[str]:
    return [text for text in alerts.sent if "Client 'salon'" in text]


@pytest.fixture(autouse=True)
def _fresh_alerts():
    alerts.reset()


def test_a_flood_is_stored_and_answered_once_with_a_polite_word(api, make_client, llm, chatflow, monkeypatch):
    monkeypatch.setattr(settings, "limit_messages_per_minute", 3)
    make_client("salon")
    llm.set_reply("Ответ модели")
    for i in range(5):
        _say(api, f"Сообщение номер {i}")
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.RATE_LIMITED]
    for i in range(4):
        _say(api, f"Ещё одно {i}")
    wait_until(lambda: _stored() == 9, message="every message stored")
    wait_until(lambda: llm.chat_requests() == [] and len(_limit_alerts()) == 1)
    with session_scope() as session:  # the second burst's turn is done, silently
        wait_until(lambda: not session.scalar(select(Message.id).where(Message.status == "received")))
    assert chatflow.sent_texts(PHONE) == [replies.RATE_LIMITED]
    assert llm.chat_requests() == []
    assert len(_limit_alerts()) == 1


def test_the_daily_model_budget_falls_back_to_answering_without_the_model(api, make_client, llm, chatflow):
    make_client("salon", settings={"limit_model_calls_per_day": 1})
    llm.set_reply("Маникюр стоит 7000 тенге.")
    _say(api, "Сколько стоит маникюр?")
    wait_until(lambda: chatflow.sent_texts(PHONE) == ["Маникюр стоит 7000 тенге."])
    _say(api, "А педикюр сколько стоит?")
    sent = wait_until(lambda: chatflow.sent_texts(PHONE)[1:], message="the second answer")
    assert sent == [replies.CLARIFY]  # honest, without the model: nothing known, so it asks (no_knowledge_policy)
    assert len(llm.chat_requests()) == 1
    assert len(_limit_alerts()) == 1 and "language-model" in _limit_alerts()[0]


def test_the_transcription_budget_is_counted_in_seconds_before_paying(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon", settings={"limit_transcription_seconds_per_day": 6})
    llm.set_reply("Записала вас.")
    _say(api, "", **_voice("Запишите меня на маникюр".encode(), seconds=4))
    wait_until(lambda: chatflow.sent_texts(PHONE) == ["Записала вас."])
    _say(api, "", **_voice("И на педикюр тоже".encode(), seconds=4))
    wait_until(lambda: chatflow.sent_texts(PHONE)[1:] == [replies.VOICE_UNAVAILABLE])
    _say(api, "", **_voice("И ещё на стрижку".encode(), seconds=4))
    wait_until(lambda: _stored() == 3)
    with session_scope() as session:
        wait_until(lambda: not session.scalar(select(Message.id).where(Message.status.in_(("received", "processing")))))
    assert chatflow.sent_texts(PHONE)[1:] == [replies.VOICE_UNAVAILABLE]  # told once
    assert len(elevenlabs.transcriptions()) == 1


def _wav(seconds: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(1)
        audio.setframerate(2000)
        audio.writeframes(b"\x80" * 2000 * seconds)
    return out.getvalue()


def test_audio_without_a_declared_duration_is_measured_or_capped(api, make_client, llm, chatflow, elevenlabs, monkeypatch):
    monkeypatch.setattr(settings, "media_max_seconds", 20)
    monkeypatch.setattr(settings, "audio_unmeasured_max_bytes", 100_000)
    make_client("salon")
    _say(api, "", **_voice(_wav(30), mimetype="audio/wav"))  # no `seconds`: the container says 30 s
    wait_until(lambda: chatflow.sent_texts(PHONE) == [replies.VOICE_NOT_RECOGNISED])
    _say(api, "", **_voice(b"x" * 150_000))  # no container at all, and larger than AUDIO_UNMEASURED_MAX_BYTES
    wait_until(lambda: chatflow.sent_texts(PHONE) == [replies.VOICE_NOT_RECOGNISED] * 2)
    assert elevenlabs.transcriptions() == []


def test_escalations_past_the_daily_limit_do_not_call_managers_again(api, make_client, llm, chatflow, telegram, monkeypatch):
    monkeypatch.setattr(settings, "limit_escalations_per_day", 1)
    make_client("salon", telegram_chat_id=-100111, telegram_bot_token="100001:t", settings={"escalation_cooldown_minutes": 0})
    _say(api, "Позовите менеджера")
    wait_until(lambda: chatflow.sent_texts(PHONE) == [replies.HANDOVER_ACK])
    with session_scope() as session:
        handover = session.scalar(select(Handover))
        conversation = session.scalar(select(Conversation))
        assert handover is not None and conversation is not None
        lifecycle.transition(session, handover=handover, conversation=conversation, target=HandoverStatus.RESOLVED, now=handover.created_at)
    for _ in range(2):
        _say(api, "Позовите менеджера ещё раз")
        wait_until(lambda: _stored() in (2, 3))
    wait_until(lambda: chatflow.sent_texts(PHONE)[1:] == [replies.ESCALATION_LIMITED])
    with session_scope() as session:
        assert len(list(session.scalars(select(Handover.id)))) == 1
    assert len(_limit_alerts()) == 1


def test_a_turn_superseded_by_a_new_message_is_not_counted_twice(api, make_client, llm, chatflow, monkeypatch):
    monkeypatch.setattr(settings, "limit_messages_per_minute", 2)
    make_client("salon")
    llm.set_reply("Маникюр стоит 7000 тенге.")
    llm.latency = 1.5
    _say(api, "Здравствуйте")
    in_flight = lambda: [r for r in llm.requests if "/chat/completions" in r.path]  # noqa: E731
    wait_until(in_flight, message="the model asked about the first message")
    _say(api, "Сколько стоит маникюр?")  # while the answer is being written: that turn is superseded
    assert wait_until(lambda: chatflow.sent_texts(PHONE), timeout=15) == ["Маникюр стоит 7000 тенге."]
    assert len(llm.chat_requests()) == 2
