"""Answers grounded in each client's own knowledge, never another client's, honest when nothing matches."""

import json
import logging
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.models import Handover
from app.services import replies
from app.services.conversation import scheduling
from app.services.knowledge import kb, qdrant
from app.services.replies import FALLBACK_RESPONSES
from tests.helpers import chatflow_payload, wait_until

SALON_KB = """# Цены
## Маникюр
Классический маникюр стоит 7000 тенге, с покрытием гель-лаком 9500 тенге.

# Режим работы
Салон работает ежедневно с 10:00 до 21:00, без выходных.

# Адрес
Мы находимся в Алматы, проспект Абая 150, второй этаж.
"""

CLINIC_KB = """# Приём
## Стоимость консультации
Консультация терапевта стоит 12000 тенге. Секретный код клиники: ZETA-42.
"""


@pytest.fixture
def salon(make_client):
    client = make_client("salon")
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    return client


def _system_prompt(llm) -> str:
    return str(llm.chat_requests()[-1]["messages"][0]["content"])


def test_answer_uses_the_clients_knowledge(api, salon, llm, chatflow):
    llm.set_reply("Классический маникюр — 7000 тенге.")
    api.post("/webhook/salon", json=chatflow_payload("Сколько у вас стоит маникюр?"))
    assert wait_until(lambda: chatflow.sent_texts()) == ["Классический маникюр — 7000 тенге."]
    prompt = _system_prompt(llm)
    assert "Справочные материалы" in prompt and "<<<" in prompt and ">>>" in prompt
    assert "7000 тенге" in prompt


def test_one_clients_knowledge_never_reaches_another_clients_customers(api, salon, make_client, llm, chatflow):
    clinic = make_client("clinic")
    kb.ingest_text(client_id=str(clinic.id), source="clinic.md", text=CLINIC_KB, kind="markdown")
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр? И консультация терапевта, секретный код клиники?"))
    wait_until(lambda: chatflow.sent_texts())
    prompt = _system_prompt(llm)
    assert "7000 тенге" in prompt  # the salon's own knowledge was found
    assert "ZETA-42" not in prompt and "12000" not in prompt


def test_question_without_relevant_knowledge_is_answered_honestly_and_escalated_when_the_client_says_so(api, make_client, llm, chatflow):
    client = make_client("salon", settings={"no_knowledge_policy": "escalate"})
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    api.post("/webhook/salon", json=chatflow_payload("Вы делаете ремонт автомобилей?"))
    assert wait_until(lambda: chatflow.sent_texts()) == [FALLBACK_RESPONSES["no_knowledge"]]
    assert llm.chat_requests() == []
    with session_scope() as session:
        assert session.scalar(select(Handover.reason)) == "no_knowledge"


def _asks(api, chatflow, text: str, replies_before: int) -> str:
    api.post("/webhook/salon", json=chatflow_payload(text))
    return str(wait_until(lambda: len(chatflow.sent_texts()) > replies_before and chatflow.sent_texts())[-1])


def _handover_reason() -> str | None:
    with session_scope() as session:
        return session.scalar(select(Handover.reason))


@pytest.mark.parametrize(("answer", "escalates"), [("Да, давайте", True), ("иә", True), ("нет, спасибо", False)])
def test_without_knowledge_the_bot_asks_once_then_offers_a_manager_and_the_customer_decides(api, salon, llm, chatflow, answer, escalates):
    # The model, asked about the clarification (not a question, so the model reads it), finds nothing either.
    llm.set_reply(json.dumps({"reply": "Не знаю.", "handoff": "no_knowledge", "reason": "нет в материалах"}))
    assert _asks(api, chatflow, "Вы делаете ремонт автомобилей?", 0) == replies.CLARIFY
    assert _asks(api, chatflow, "Ну ремонт двигателя, замену масла", 1) == replies.OFFER_MANAGER
    assert _handover_reason() is None  # nobody was called unasked
    if escalates:
        assert _asks(api, chatflow, answer, 2) == replies.HANDOVER_ACK
        assert _handover_reason() == "no_knowledge"
    else:
        assert _asks(api, chatflow, answer, 2) == replies.OFFER_DECLINED
        assert _handover_reason() is None
    answering = [r for r in llm.chat_requests() if not r["messages"][0]["content"].startswith("Классифицируй")]  # not the intent's
    assert len(answering) == 1  # the first question had nothing relevant: the model was not asked to make it up


def test_without_a_language_model_a_confident_passage_is_the_answer(api, salon, chatflow):
    api.post("/webhook/salon", json=chatflow_payload("До скольки работает салон?", phone="77010000041"))
    [answer] = wait_until(lambda: chatflow.sent_texts("77010000041"))
    assert "с 10:00 до 21:00" in answer and not answer.startswith("Режим работы")

    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит ремонт телевизора?", phone="77010000042"))
    assert wait_until(lambda: chatflow.sent_texts("77010000042")) == [replies.CLARIFY]


@pytest.fixture
def qdrant_unreachable(monkeypatch) -> Iterator[None]:
    qdrant.close()
    monkeypatch.setattr(settings, "qdrant_url", "http://127.0.0.1:9")  # nothing listens there
    yield
    qdrant.close()
    monkeypatch.undo()
    qdrant.close()


def test_qdrant_down_answers_without_knowledge(api, make_client, llm, chatflow, qdrant_unreachable, caplog):
    make_client("salon")
    caplog.set_level(logging.ERROR)
    llm.set_reply("Уточню и вернусь с ответом.")
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?"))
    assert wait_until(lambda: chatflow.sent_texts(), timeout=15) == ["Уточню и вернусь с ответом."]
    assert "Справочные материалы" not in _system_prompt(llm)
    assert any(getattr(r, "service", None) == "qdrant" for r in caplog.records)


def test_the_query_is_embedded_while_the_turn_still_waits(api, make_client, llm, chatflow):
    # The customer pauses: the turn's knowledge query is prepared before the turn is due, so answering
    # does not wait for the embedder. The turn then finds it and answers from the knowledge.
    client = make_client("salon", settings={"buffer_wait_seconds": 6})
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    llm.set_reply("Классический маникюр — 7000 тенге.")
    api.post("/webhook/salon", json=chatflow_payload("хочу узнать про маникюр", message_id="P-1"))
    api.post("/webhook/salon", json=chatflow_payload("цена какая", message_id="P-2"))
    wait_until(lambda: any(query == "хочу узнать про маникюр\nцена какая" for _, query in kb._query_cache), timeout=5)
    assert chatflow.sent_texts() == []  # prepared ahead, not answered early
    assert wait_until(lambda: chatflow.sent_texts(), timeout=15) == ["Классический маникюр — 7000 тенге."]
    assert "7000 тенге" in _system_prompt(llm)


def test_no_query_is_prepared_while_the_process_is_busy_acknowledging(api, make_client, llm, chatflow):
    # Deliveries pour in: embedding ahead would take the CPU from acknowledging them. The turn embeds its own query.
    client = make_client("salon", settings={"buffer_wait_seconds": 2})
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    llm.set_reply("Классический маникюр — 7000 тенге.")
    scheduling.count_webhook(5)  # five other deliveries being acknowledged meanwhile
    try:
        api.post("/webhook/salon", json=chatflow_payload("сколько стоит маникюр с покрытием"))
        time.sleep(1.0)  # the prefetch would have run after 0.3 s
        assert not any(query == "сколько стоит маникюр с покрытием" for _, query in kb._query_cache)
    finally:
        scheduling.count_webhook(-5)
    assert wait_until(lambda: chatflow.sent_texts(), timeout=15) == ["Классический маникюр — 7000 тенге."]
    assert "7000 тенге" in _system_prompt(llm)


def test_a_muted_bot_does_not_prepare_a_query(api, make_client, llm, chatflow, monkeypatch):
    # The customer said "stop": their next messages are stored, not answered, so nothing is embedded ahead.
    client = make_client("salon", settings={"buffer_wait_seconds": 1})
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    api.post("/webhook/salon", json=chatflow_payload("стоп, не пишите мне"))
    wait_until(lambda: chatflow.sent_texts(), timeout=10)
    prepared: list[str] = []
    monkeypatch.setattr(kb, "warm_query", prepared.append)  # the turn itself still embeds it once, for its intent
    api.post("/webhook/salon", json=chatflow_payload("а сколько стоит маникюр"))
    time.sleep(1.5)
    assert prepared == []
    assert len(chatflow.sent_texts()) == 1
