"""What the webhook accepts, refuses and ignores: clear answers, never a 500, nothing lost."""

import json
import time

import pytest
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Message, MessageRole
from tests.helpers import chatflow_payload, wait_until


def _count(role: MessageRole = MessageRole.USER) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Message).where(Message.role == role)) or 0)


def test_payload_wrapped_in_body_is_accepted(api, llm, chatflow, make_client):
    make_client("salon")
    response = api.post("/webhook/salon", json={"body": chatflow_payload("Здравствуйте")})
    assert response.json() == {"status": "ok"}
    wait_until(lambda: chatflow.sent_texts())


def test_unknown_client_is_404(api):
    response = api.post("/webhook/nobody", json=chatflow_payload())
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p.update(message="   "), "message is empty"),
        (lambda p: p.update(message=""), "message is empty"),
        (lambda p: p.pop("metadata"), "metadata"),
        (lambda p: p["metadata"].pop("messageId"), "messageId"),
        (lambda p: p["metadata"].pop("remoteJid"), "remoteJid"),
        (lambda p: p.update(metadata="nope"), "metadata"),
        (lambda p: p["metadata"].update(remoteJid="not-a-jid"), "remoteJid"),
    ],
)
def test_bad_payload_gets_a_readable_422(api, make_client, mutate, reason):
    make_client("salon")
    payload = chatflow_payload()
    mutate(payload)
    response = api.post("/webhook/salon", json=payload)
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert _count() == 0


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"null", b"42", "Привет".encode()])
def test_malformed_body_is_422(api, make_client, body):
    make_client("salon")
    response = api.post("/webhook/salon", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_very_long_message_is_stored_whole_and_answered(api, llm, chatflow, make_client):
    make_client("salon")
    text = "Длинный вопрос про цены на услуги. " * 600  # about 20 000 characters (a question: the bot answers it)
    assert len(text) >= 20_000
    assert api.post("/webhook/salon", json=chatflow_payload(text)).status_code == 200
    wait_until(lambda: chatflow.sent_texts())
    with session_scope() as session:
        assert session.scalar(select(Message.content).where(Message.role == MessageRole.USER)) == text
    assert len(llm.chat_requests()[-1]["messages"][-1]["content"]) <= 4000  # the model gets a bounded excerpt


def test_emoji_and_markup_survive_unchanged(api, llm, chatflow, make_client):
    make_client("salon")
    text = "Сәлем! 💅🏻 <b>маникюр</b> & 'педикюр' \"скидка\" 100% \\n {json} ; DROP TABLE messages; --"
    api.post("/webhook/salon", json=chatflow_payload(text))
    wait_until(lambda: chatflow.sent_texts())
    with session_scope() as session:
        assert session.scalar(select(Message.content).where(Message.role == MessageRole.USER)) == text
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == text


def test_oversize_body_is_rejected_early(api, make_client):
    make_client("salon")
    huge = json.dumps(chatflow_payload("x" * 2_000_000))
    response = api.post("/webhook/salon", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert _count() == 0


def test_webhook_secret_is_required_when_configured(api, llm, chatflow, make_client):
    make_client("salon", webhook_secret="s3cret-value-long-enough-to-be-hard")
    assert api.post("/webhook/salon", json=chatflow_payload()).status_code == 401
    assert api.post("/webhook/salon", json=chatflow_payload(), headers={"X-Webhook-Secret": "wrong"}).status_code == 401
    ok = api.post("/webhook/salon", json=chatflow_payload(), headers={"X-Webhook-Secret": "s3cret-value-long-enough-to-be-hard"})
    assert ok.json() == {"status": "ok"}
    assert _count() == 1


def test_group_and_status_broadcasts_are_ignored(api, llm, chatflow, make_client):
    make_client("salon")
    for jid in ("120363025246125486@g.us", "status@broadcast"):
        payload = chatflow_payload("Всем привет")
        payload["metadata"]["remoteJid"] = jid
        assert api.post("/webhook/salon", json=payload).json() == {"status": "ignored", "reason": "group_or_broadcast"}
    time.sleep(0.6)
    assert chatflow.sent_texts() == [] and _count() == 0


def test_echo_of_our_own_reply_is_not_answered(api, llm, chatflow, make_client):
    make_client("salon")
    llm.set_reply("Мы открыты до 20:00.")
    api.post("/webhook/salon", json=chatflow_payload("До скольки открыты?", phone="77010000077"))
    wait_until(lambda: chatflow.sent_texts())

    echo = chatflow_payload("Мы открыты до 20:00.", phone="77010000077")
    echo["metadata"]["fromMe"] = True
    assert api.post("/webhook/salon", json=echo).json() == {"status": "ignored", "reason": "echo"}
    time.sleep(0.6)
    assert len(chatflow.sent_texts()) == 1 and len(llm.chat_requests()) == 1


def test_message_from_the_business_phone_is_stored_not_answered(api, llm, chatflow, make_client):
    make_client("salon")
    staff = chatflow_payload("Здравствуйте, это администратор Алия", phone="77010000078")
    staff["metadata"]["fromMe"] = True
    assert api.post("/webhook/salon", json=staff).json() == {"status": "ignored", "reason": "from_me"}
    time.sleep(0.6)
    assert chatflow.sent_texts() == [] and llm.requests == []
    with session_scope() as session:
        assert session.scalar(select(Message.role)) == MessageRole.MANAGER


def test_unknown_message_type_is_accepted(api, make_client):
    make_client("salon")
    payload = chatflow_payload("", messageType="pollCreationMessage")
    assert api.post("/webhook/salon", json=payload).json() == {"status": "ok"}
    with session_scope() as session:
        assert session.scalar(select(Message.type)) == "other"


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_non_finite_numbers_are_not_a_crash(api, make_client, literal):
    """Found by fuzzing: a timestamp of Infinity used to raise OverflowError (a 500)."""
    make_client("salon")
    body = json.dumps(chatflow_payload("Привет")).replace('"timestamp": ', f'"timestamp": {literal}, "_was": ', 1)
    response = api.post("/webhook/salon", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200


def test_nul_characters_are_dropped_not_a_crash(api, llm, chatflow, make_client):
    """Found by fuzzing: PostgreSQL cannot store NUL in text or jsonb; it used to be a 500."""
    make_client("salon")
    payload = chatflow_payload("При\x00вет")
    payload["mediaData"] = {"\x00": False, "caption": "a\x00b"}
    assert api.post("/webhook/salon", json=payload).json() == {"status": "ok"}
    wait_until(lambda: chatflow.sent_texts())
    with session_scope() as session:
        assert session.scalar(select(Message.content).where(Message.role == MessageRole.USER)) == "Привет"


def test_every_acknowledgement_has_the_documented_shape(api, llm, chatflow, make_client):
    # The webhook answers with a hand-built JSON body (for speed); the shape it declares is WebhookAck.
    from app.main import app
    from app.schemas.chatflow import IgnoreReason, IngestStatus, WebhookAck

    make_client("salon")
    payload = chatflow_payload("Здравствуйте", message_id="ACK-1")
    group = chatflow_payload("всем привет", message_id="ACK-2")
    group["metadata"]["remoteJid"] = "120363000000000000@g.us"
    acks = [api.post("/webhook/salon", json=body).json() for body in (payload, payload, group)]
    assert [WebhookAck.model_validate(ack) for ack in acks] == [
        WebhookAck(status=IngestStatus.OK),
        WebhookAck(status=IngestStatus.DUPLICATE),
        WebhookAck(status=IngestStatus.IGNORED, reason=IgnoreReason.GROUP_OR_BROADCAST),
    ]
    assert all(set(ack) <= set(WebhookAck.model_fields) for ack in acks) and "reason" not in acks[0]
    documented = app.openapi()["paths"]["/webhook/{client_slug}"]["post"]["responses"]["200"]["content"]["application/json"]
    assert documented["schema"] == {"$ref": "#/components/schemas/WebhookAck"}


def test_the_api_description_documents_the_bodies_read_by_the_routes_themselves():
    from app.main import app

    spec = app.openapi()
    webhook = spec["paths"]["/webhook/{client_slug}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    telegram = spec["paths"]["/telegram-webhook/{bot_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "remoteJid" in json.dumps(webhook) and "callback_query" in json.dumps(telegram)
    assert "#/$defs/" not in json.dumps(spec)  # every reference resolves
