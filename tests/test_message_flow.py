"""A customer's WhatsApp message, end to end: webhook -> queue -> AI -> ChatFlow -> stored."""

import concurrent.futures
import time
from datetime import timedelta

from sqlalchemy import delete, func, select

from app.config import settings
from app.db import session_scope
from app.models import (
    Conversation,
    Handover,
    HandoverReason,
    HandoverStatus,
    Message,
    MessageRole,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    User,
)
from app.redis_client import redis_client
from app.services import replies
from app.services.conversation import inbound, scheduling, turn
from app.services.replies import CLARIFY, FALLBACK_RESPONSES, GREETING
from tests.helpers import chatflow_payload, wait_until


def _messages(role: MessageRole | None = None) -> list[Message]:
    with session_scope() as session:
        query = select(Message).order_by(Message.created_at)
        if role:
            query = query.where(Message.role == role)
        return list(session.scalars(query))


def test_message_is_answered_through_chatflow_and_stored(api, llm, chatflow, make_client):
    make_client("salon", prompt="Ты ассистент салона красоты «Лотос».")
    llm.set_reply("Стрижка стоит 5000 тенге.")

    started = time.perf_counter()
    response = api.post("/webhook/salon", json=chatflow_payload("Сколько стоит стрижка?", phone="77015550001"))
    ack_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert ack_ms < 1000  # acknowledged without waiting for the AI or the messenger
    sent = wait_until(lambda: chatflow.sent_texts(), message="the reply on WhatsApp")
    assert sent == ["Стрижка стоит 5000 тенге."]
    request = chatflow.requests[-1]
    assert request.query["token"] == "cf-token-salon"
    assert request.query["instance_id"] == "inst-salon"
    assert request.query["jid"] == "77015550001@s.whatsapp.net"

    prompt = llm.chat_requests()[-1]["messages"]
    assert prompt[0]["role"] == "system" and "Лотос" in prompt[0]["content"]
    assert prompt[-1] == {"role": "user", "content": "Сколько стоит стрижка?"}

    wait_until(
        lambda: _messages(MessageRole.ASSISTANT) and _messages(MessageRole.ASSISTANT)[0].status == MessageStatus.SENT,
        message="reply marked sent",
    )
    user_message, answer = _messages()
    assert (user_message.role, user_message.status, user_message.content) == (
        MessageRole.USER,
        MessageStatus.PROCESSED,
        "Сколько стоит стрижка?",
    )
    assert (answer.role, answer.content) == (MessageRole.ASSISTANT, "Стрижка стоит 5000 тенге.")
    assert answer.turn_id == user_message.turn_id


def test_history_is_sent_with_the_next_turn(api, llm, chatflow, make_client):
    make_client("salon")
    llm.set_reply("Здравствуйте! Чем помочь?")
    api.post("/webhook/salon", json=chatflow_payload("Привет"))
    wait_until(lambda: len(chatflow.sent_texts()) == 1)
    llm.set_reply("Мы работаем с 10 до 20.")
    api.post("/webhook/salon", json=chatflow_payload("До скольки работаете?"))
    wait_until(lambda: len(chatflow.sent_texts()) == 2)

    messages = llm.chat_requests()[-1]["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "Привет"),
        ("assistant", "Здравствуйте! Чем помочь?"),
        ("user", "До скольки работаете?"),
    ]


def test_duplicate_deliveries_get_one_answer(api, llm, chatflow, make_client):
    make_client("salon")
    payload = chatflow_payload("Есть запись на завтра?", message_id="DUP-1")

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        statuses = [r.json()["status"] for r in pool.map(lambda _: api.post("/webhook/salon", json=payload), range(3))]
    assert sorted(statuses) == ["duplicate", "duplicate", "ok"]

    wait_until(lambda: chatflow.sent_texts())
    time.sleep(1.0)  # give a wrongly scheduled second turn the chance to answer again
    assert len(chatflow.sent_texts()) == 1
    assert len(_messages(MessageRole.USER)) == 1
    assert api.post("/webhook/salon", json=payload).json()["status"] == "duplicate"


def test_duplicate_is_caught_by_postgres_when_redis_forgot_it(api, llm, chatflow, make_client):
    make_client("salon")
    payload = chatflow_payload("Здравствуйте", message_id="DUP-2")
    assert api.post("/webhook/salon", json=payload).json()["status"] == "ok"
    from app.redis_client import redis_client

    for key in redis_client.scan_iter("dedup:*"):
        redis_client.delete(key)
    assert api.post("/webhook/salon", json=payload).json()["status"] == "duplicate"
    wait_until(lambda: chatflow.sent_texts())
    time.sleep(0.8)
    assert len(chatflow.sent_texts()) == 1


def test_returning_customer_whose_conversation_was_deleted_is_answered(api, llm, chatflow, make_client):
    # The webhook remembers a returning customer's conversation to move its turn early; a conversation
    # deleted since (the customer's data erased) must not swallow the next message.
    make_client("salon", settings={"buffer_wait_seconds": 1.0})  # long enough for the early move to count
    assert api.post("/webhook/salon", json=chatflow_payload("Здравствуйте", phone="77015550007")).json()["status"] == "ok"
    wait_until(lambda: len(chatflow.sent_texts()) == 1)
    with session_scope() as session:
        session.execute(delete(User).where(User.phone == "77015550007"))
    llm.set_reply("Да, есть окно в 15:00.")
    assert api.post("/webhook/salon", json=chatflow_payload("Есть запись на завтра?", phone="77015550007")).json()["status"] == "ok"
    assert wait_until(lambda: chatflow.sent_texts()[1:], message="the answer to the new conversation") == ["Да, есть окно в 15:00."]


def test_message_stored_after_its_turn_fell_due_is_answered(api, llm, chatflow, make_client):
    # A returning customer's turn is moved before the message is stored. When the store is slower than
    # the wait (the conversation row locked for 1.5 s), the turn is moved again after it.
    make_client("salon", settings={"buffer_wait_seconds": 1.0})  # long enough for the early move to count
    assert api.post("/webhook/salon", json=chatflow_payload("Здравствуйте", phone="77015550008")).json()["status"] == "ok"
    wait_until(lambda: len(chatflow.sent_texts()) == 1)
    llm.set_reply("Маникюр стоит 7000 тенге.")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        with session_scope() as session:
            session.execute(select(Conversation).with_for_update())
            pending = pool.submit(api.post, "/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?", phone="77015550008"))
            time.sleep(1.5)  # longer than the turn's wait (1 s): it falls due while the store waits for the lock
            assert not pending.done()
        assert pending.result(timeout=10).json()["status"] == "ok"
    assert wait_until(lambda: chatflow.sent_texts()[1:], message="the answer") == ["Маникюр стоит 7000 тенге."]


def test_quick_messages_become_one_turn_with_one_answer(api, llm, chatflow, make_client):
    make_client("salon", settings={"buffer_wait_seconds": 0.8})
    for text in ("Здравствуйте", "хотел узнать", "сколько стоит маникюр?"):
        assert api.post("/webhook/salon", json=chatflow_payload(text)).status_code == 200
        time.sleep(0.1)

    wait_until(lambda: chatflow.sent_texts())
    time.sleep(1.2)
    assert len(chatflow.sent_texts()) == 1
    assert len(llm.requests) == 1
    assert llm.chat_requests()[0]["messages"][-1]["content"] == "Здравствуйте\nхотел узнать\nсколько стоит маникюр?"
    users = _messages(MessageRole.USER)
    assert len({m.turn_id for m in users}) == 1 and all(m.status == MessageStatus.PROCESSED for m in users)


def test_a_burst_delivered_late_is_still_one_turn(api, llm, chatflow, make_client):
    # The gateway delivers a customer's two messages, sent a second apart, 3 s late and 1.5 s apart (its
    # retries, or our own backlog). Judged by arrival alone the customer paused longer than the wait;
    # by the messages' own timestamps they are one thought, and get one answer.
    make_client("salon", settings={"buffer_wait_seconds": 0.5})
    sent_at = int(time.time()) - 3
    first = chatflow_payload("Здравствуйте, хотел узнать")
    first["metadata"]["timestamp"] = sent_at
    assert api.post("/webhook/salon", json=first).status_code == 200
    time.sleep(1.5)
    assert chatflow.sent_texts() == []  # a message that arrived late waits as long as it was late
    second = chatflow_payload("сколько стоит маникюр?")
    second["metadata"]["timestamp"] = sent_at + 1
    assert api.post("/webhook/salon", json=second).status_code == 200

    wait_until(lambda: chatflow.sent_texts(), timeout=15)
    time.sleep(1.0)
    assert len(chatflow.sent_texts()) == 1
    assert llm.chat_requests()[0]["messages"][-1]["content"] == "Здравствуйте, хотел узнать\nсколько стоит маникюр?"


def test_while_deliveries_lag_a_turn_waits_for_the_rest_of_its_burst(api, llm, chatflow, make_client):
    # A customer's first message arrived on time; then the client's deliveries start arriving 3 s late
    # (another customer's message shows it). The rest of the first customer's burst is in that backlog,
    # so the turn waits for it instead of answering half a thought.
    make_client("salon", settings={"buffer_wait_seconds": 0.5})
    assert api.post("/webhook/salon", json=chatflow_payload("Здравствуйте, хотел узнать")).status_code == 200
    late = chatflow_payload("Добрый день", phone="77010000002")
    late["metadata"]["timestamp"] = int(time.time()) - 3
    assert api.post("/webhook/salon", json=late).status_code == 200
    time.sleep(1.5)
    assert chatflow.sent_texts("77010000001") == []
    assert api.post("/webhook/salon", json=chatflow_payload("сколько стоит маникюр?")).status_code == 200

    wait_until(lambda: chatflow.sent_texts("77010000001"), timeout=15)
    time.sleep(1.0)
    assert len(chatflow.sent_texts("77010000001")) == 1
    assert "Здравствуйте, хотел узнать\nсколько стоит маникюр?" in [r["messages"][-1]["content"] for r in llm.chat_requests()]


def test_no_turn_is_answered_while_deliveries_queue(api, llm, chatflow, make_client, monkeypatch):
    # More deliveries waiting than request threads (a burst beyond what the process acknowledges per
    # second): turns hold, because a customer's next message may be in that queue; then they answer.
    make_client("salon", settings={"buffer_wait_seconds": 0.3})
    monkeypatch.setattr(settings, "http_threads", 0)  # this process's one delivery in flight is a queue
    scheduling.count_webhook(1)
    try:
        wait_until(scheduling.deliveries_queueing, timeout=5, message="the backlog said in Redis")
        assert api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?")).status_code == 200
        time.sleep(1.5)
        assert chatflow.sent_texts() == []
    finally:
        scheduling.count_webhook(-1)
    assert len(wait_until(lambda: chatflow.sent_texts(), timeout=10)) == 1


def test_deliveries_queueing_in_another_api_process_hold_this_workers_turns(api, llm, chatflow, make_client):
    make_client("salon", settings={"buffer_wait_seconds": 0.3})
    other = "api-host:4242:abcdef"
    redis_client.zadd(scheduling.QUEUEING_KEY, {other: int(time.time() * 1000) + 60_000})  # busy for the next minute
    assert api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?")).status_code == 200
    time.sleep(1.5)
    assert chatflow.sent_texts() == []
    redis_client.zrem(scheduling.QUEUEING_KEY, other)  # it caught up
    assert len(wait_until(lambda: chatflow.sent_texts(), timeout=10)) == 1


def test_conversations_of_different_customers_are_answered_separately(api, llm, chatflow, make_client):
    make_client("salon")
    api.post("/webhook/salon", json=chatflow_payload("Привет", phone="77010000011"))
    api.post("/webhook/salon", json=chatflow_payload("Салем", phone="77010000022"))
    wait_until(lambda: len(chatflow.sent_texts()) == 2)
    assert {r.query["jid"] for r in chatflow.requests} == {"77010000011@s.whatsapp.net", "77010000022@s.whatsapp.net"}


def test_openai_down_gives_fallback_and_ai_error_handover(api, llm, chatflow, make_client):
    make_client("salon")
    llm.server_error(500, times=None)

    api.post("/webhook/salon", json=chatflow_payload("Какие у вас цены?"))

    assert wait_until(lambda: chatflow.sent_texts()) == [FALLBACK_RESPONSES["ai_error"]]
    assert len(llm.requests_to("/chat/completions")) == 2  # one retry, then the fallback
    with session_scope() as session:
        handover = session.scalar(select(Handover))
    assert handover is not None and (handover.reason, handover.status) == (HandoverReason.AI_ERROR, HandoverStatus.PENDING)


def test_without_a_manager_group_the_bot_never_promises_a_manager(api, llm, chatflow, make_client):
    make_client("salon", telegram_chat_id=None)
    api.post("/webhook/salon", json=chatflow_payload("позовите менеджера", phone="77010000041"))
    assert wait_until(lambda: chatflow.sent_texts("77010000041")) == [replies.NO_MANAGER]
    llm.server_error(500, times=None)
    api.post("/webhook/salon", json=chatflow_payload("Какие у вас цены?", phone="77010000042"))
    assert wait_until(lambda: chatflow.sent_texts("77010000042")) == [replies.NO_MANAGER]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 0  # nobody could take one: the bot stays on
    api.post("/webhook/salon", json=chatflow_payload("Привет", phone="77010000041"))
    assert wait_until(lambda: len(chatflow.sent_texts("77010000041")) == 2)  # still answered by the bot


def test_without_openai_key_the_bot_still_answers(api, chatflow, make_client):
    make_client("salon")
    api.post("/webhook/salon", json=chatflow_payload("Привет", phone="77010000031"))
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит стрижка?", phone="77010000032"))
    assert wait_until(lambda: chatflow.sent_texts("77010000031")) == [GREETING]
    assert wait_until(lambda: chatflow.sent_texts("77010000032")) == [CLARIFY]  # nothing known: it asks first


def test_chatflow_success_false_is_retried_then_marked_failed(api, llm, chatflow, make_client, monkeypatch):
    from app.config import settings

    monkeypatch.setattr(settings, "outbox_max_attempts", 1)
    make_client("salon")
    chatflow.refuse(times=None)

    api.post("/webhook/salon", json=chatflow_payload("Привет"))

    wait_until(lambda: _outbox_status() == OutboxStatus.FAILED, message="outbox item failed")
    assert len(chatflow.requests) == 2  # the first try and one retry
    assert _messages(MessageRole.ASSISTANT)[0].status == MessageStatus.FAILED


def test_chatflow_transient_failure_is_retried_and_sent_once(api, llm, chatflow, make_client):
    make_client("salon")
    chatflow.refuse(times=1)
    api.post("/webhook/salon", json=chatflow_payload("Привет"))
    wait_until(lambda: _outbox_status() == OutboxStatus.SENT)
    assert len(chatflow.sent_texts()) == 1


def test_delivery_resumes_after_outage_without_resending(api, llm, chatflow, make_client, monkeypatch):
    make_client("salon")
    llm.set_reply("Первое предложение. " * 300)  # about 6000 characters: two WhatsApp messages
    _break_after_first_send(chatflow, monkeypatch)

    api.post("/webhook/salon", json=chatflow_payload("Расскажите всё"))
    wait_until(
        lambda: _outbox_status() == OutboxStatus.PENDING and len(chatflow.sent_texts()) == 1, message="first part sent, retry pending"
    )

    chatflow.clear_faults()
    with session_scope() as session:
        item = session.scalar(select(OutboxItem))
        assert item is not None
        item.next_attempt_at = item.created_at  # due now
    from app.services.channels import outbox

    assert outbox.deliver(item.id) == outbox.DeliveryOutcome.SENT
    parts = chatflow.sent_texts()
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert "".join(parts).count("Первое предложение.") == 300


def test_long_reply_is_split_on_sentences(api, llm, chatflow, make_client):
    make_client("salon")
    llm.set_reply("Это довольно длинное предложение о наших услугах. " * 200)
    api.post("/webhook/salon", json=chatflow_payload("Расскажите об услугах"))
    parts = wait_until(lambda: len(chatflow.sent_texts()) >= 3 and chatflow.sent_texts())
    assert all(len(p) <= 4096 and p.endswith(".") for p in parts)


def test_message_written_while_answer_is_generated_joins_the_turn(api, llm, chatflow, make_client):
    make_client("salon", settings={"buffer_wait_seconds": 0.2})
    llm.latency = 1.5
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?"))
    wait_until(lambda: llm.requests, message="the first LLM call")
    api.post("/webhook/salon", json=chatflow_payload("и педикюр тоже"))

    wait_until(lambda: chatflow.sent_texts(), timeout=15)
    time.sleep(2.0)
    assert len(chatflow.sent_texts()) == 1
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Сколько стоит маникюр?\nи педикюр тоже"


def test_turn_of_a_killed_worker_is_answered_once_after_restart(api, llm, chatflow, make_client, monkeypatch):
    """A process died holding a turn: its messages stay 'processing'. The sweep releases and answers them."""
    from app.config import settings

    client = make_client("salon")
    _store_without_scheduling(client.id, chatflow_payload("Вы работаете сегодня?"))
    with session_scope() as session:
        message = session.scalar(select(Message))
        assert message is not None
        message.status, message.claimed_at = MessageStatus.PROCESSING, message.created_at.replace(year=2020)

    monkeypatch.setattr(settings, "buffer_max_wait_seconds", 0)
    monkeypatch.setattr(turn, "_REDRIVE_GRACE", timedelta(0))
    assert turn.redrive_turns() == 1
    wait_until(lambda: chatflow.sent_texts())
    turn.redrive_turns()  # a second sweep finds nothing left to do
    time.sleep(0.8)
    assert len(chatflow.sent_texts()) == 1


def test_message_whose_job_was_lost_is_answered_by_the_sweep(api, llm, chatflow, make_client, monkeypatch):
    from app.config import settings

    client = make_client("salon")
    _store_without_scheduling(client.id, chatflow_payload("Алло"))  # stored, but Redis lost the job
    time.sleep(0.5)
    assert chatflow.sent_texts() == []

    monkeypatch.setattr(settings, "buffer_max_wait_seconds", 0)
    monkeypatch.setattr(turn, "_REDRIVE_GRACE", timedelta(0))
    assert turn.redrive_turns() == 1
    assert len(wait_until(lambda: chatflow.sent_texts())) == 1


def _store_without_scheduling(client_id, payload) -> None:
    from app.schemas.chatflow import ChatFlowWebhook

    parsed = ChatFlowWebhook.model_validate(payload)
    assert parsed.phone is not None
    assert inbound._store(client_id=client_id, payload=parsed, phone=parsed.phone, role=MessageRole.USER, status=MessageStatus.RECEIVED)


def _break_after_first_send(chatflow, monkeypatch) -> None:
    """The gateway accepts one message, then answers 500 until clear_faults()."""
    original = chatflow.handle
    broken: list[bool] = []

    def handle(request):
        response = original(request)
        if len(chatflow.sent()) == 1 and not broken:
            broken.append(True)
            chatflow.fail(500, times=None)
        return response

    monkeypatch.setattr(chatflow, "handle", handle)


def _outbox_status() -> str | None:
    with session_scope() as session:
        return session.scalar(select(OutboxItem.status))
