"""Leases on turns and sends, in one process: a worker that keeps beating keeps its turn however slow the model;
a send whose outcome is unknown is never repeated and a person is told; each periodic task runs once per tick
whichever process gets there first. (Killed and stalled processes: test_crash_recovery.py.)"""

import time
import uuid

from sqlalchemy import select, update

from app import leases
from app.config import settings
from app.db import session_scope
from app.models import Conversation, OutboxItem, OutboxStatus, TurnLease
from app.services.conversation import turn
from app.services.operations import alerts, maintenance
from fakes.telegram import make_message_update
from tests.helpers import chatflow_payload, wait_until
from tests.test_handover_clocks import ANNA, CHAT, PHONE, escalate, tg, topic_texts


def _outbox(kind: str | None = None) -> list[OutboxItem]:
    with session_scope() as session:
        query = select(OutboxItem).order_by(OutboxItem.created_at)
        return list(session.scalars(query if kind is None else query.where(OutboxItem.kind == kind)))


def test_a_turn_slower_than_its_lease_is_kept_by_the_heartbeat_and_answered_once(api, make_client, llm, chatflow, monkeypatch):
    make_client("salon")
    monkeypatch.setattr(settings, "lease_seconds", 1)  # renewed every third of a second
    leases.wake()
    llm.set_reply("Да, мы работаем до 20:00.")
    llm.latency = 3.0  # three leases long
    assert api.post("/webhook/salon", json=chatflow_payload("Вы сегодня работаете?")).status_code == 200
    wait_until(lambda: llm.requests, timeout=10, message="the model call")
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # the re-drive keeps looking for abandoned turns meanwhile
        assert turn.redrive_turns() == 0
        time.sleep(0.3)
    assert wait_until(lambda: chatflow.sent_texts(), timeout=15) == ["Да, мы работаем до 20:00."]
    time.sleep(0.5)
    assert len(llm.chat_requests()) == 1 and chatflow.sent_texts() == ["Да, мы работаем до 20:00."]


def test_a_send_without_an_answer_is_not_repeated_and_the_operator_is_told(api, make_client, llm, chatflow, monkeypatch):
    alerts.reset()
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    monkeypatch.setattr(settings, "chatflow_timeout_seconds", 0.5)
    chatflow.delay(2.0, times=1)  # the gateway takes the message and answers too late
    assert api.post("/webhook/salon", json=chatflow_payload("Вы сегодня работаете?")).status_code == 200

    wait_until(lambda: [i for i in _outbox() if i.status == OutboxStatus.UNCERTAIN], timeout=15, message="the send marked uncertain")
    assert wait_until(lambda: chatflow.sent_texts(), timeout=10) == ["Да, мы работаем до 20:00."]  # it did arrive
    [alert] = [a for a in alerts.sent if "may not have arrived" in a]
    assert "salon" in alert and "77010000001" not in alert
    time.sleep(1.0)
    [item] = _outbox()
    assert item.attempts == 1 and len(chatflow.requests_to("/api/v1/send-text")) == 1


def test_a_managers_reply_without_an_answer_is_flagged_in_the_topic_not_repeated(api, make_client, llm, chatflow, telegram, monkeypatch):
    alerts.reset()
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")
    _handover, topic = escalate(api, telegram, chatflow)
    monkeypatch.setattr(settings, "chatflow_timeout_seconds", 0.5)
    chatflow.delay(2.0, times=1)
    tg(api, make_message_update(90_001, CHAT, topic, ANNA, "Здравствуйте! Записала вас на 15:00."))

    wait_until(lambda: any(t.startswith("⚠️ Неизвестно, доставлено ли") for t in topic_texts(telegram, topic)), timeout=15)
    assert not any(t.startswith("✅") for t in topic_texts(telegram, topic))  # never "delivered" without the gateway's word
    assert not [a for a in alerts.sent if "may not have arrived" in a]  # the manager was told: no operator alert
    wait_until(lambda: "Здравствуйте! Записала вас на 15:00." in chatflow.sent_texts(PHONE), timeout=10)
    time.sleep(1.0)
    assert chatflow.sent_texts(PHONE).count("Здравствуйте! Записала вас на 15:00.") == 1


def test_a_send_that_never_reached_the_gateway_is_retried(api, make_client, llm, chatflow, monkeypatch):
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    monkeypatch.setattr(settings, "chatflow_url", "http://127.0.0.1:9/api/v1/send-text")  # nothing listens: refused
    assert api.post("/webhook/salon", json=chatflow_payload("Вы сегодня работаете?")).status_code == 200
    [item] = wait_until(lambda: [i for i in _outbox() if i.status == OutboxStatus.PENDING and i.attempts == 1], timeout=15)
    assert "request failed" in (item.last_error or "")


def test_each_periodic_task_runs_once_per_tick_whichever_process_gets_there_first():
    ran: list[str] = []
    tasks = [("reminders", lambda: ran.append("reminders")), ("alerts", lambda: ran.append("alerts"))]
    tick = int(time.time() // 5)
    assert maintenance.run_once_per_tick(tasks, 5, tick) == ["reminders", "alerts"]
    assert maintenance.run_once_per_tick(tasks, 5, tick) == []  # a second process, same tick
    assert maintenance.run_once_per_tick(tasks, 5, tick + 1) == ["reminders", "alerts"]
    assert ran == ["reminders", "alerts", "reminders", "alerts"]


def test_a_lease_its_own_turn_released_is_not_reported_lost_but_a_taken_over_one_is(api, make_client, llm, chatflow, caplog):
    make_client("salon")
    llm.set_reply("Здравствуйте!")
    api.post("/webhook/salon", json=chatflow_payload("Привет"))
    wait_until(lambda: chatflow.sent_texts(), message="the first answer")
    with session_scope() as session:
        conversation_id = session.scalar(select(Conversation.id))
    assert conversation_id is not None
    with session_scope() as session:
        version = turn._take_lease(session, conversation_id, uuid.uuid4())
    assert version is not None
    with leases.hold("turn", (conversation_id, version), turn._renew_leases) as claim:
        with session_scope() as session:
            turn._release_lease(session, conversation_id, version)  # the turn finished; the hold has not ended yet
        leases._heartbeat.beat()
        assert not claim.lost and "lease.lost" not in caplog.text  # an operator is not warned of nothing
    with session_scope() as session:
        version = turn._take_lease(session, conversation_id, uuid.uuid4())
    assert version is not None
    with leases.hold("turn", (conversation_id, version), turn._renew_leases) as claim:
        with session_scope() as session:  # its lease expired and another worker took the turn over
            session.execute(update(TurnLease).where(TurnLease.conversation_id == conversation_id).values(lease_until=None))
            assert turn._take_lease(session, conversation_id, uuid.uuid4()) == version + 1
        leases._heartbeat.beat()
        assert claim.lost and "lease.lost" in caplog.text
