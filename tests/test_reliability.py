"""When a dependency fails, for real: Redis stopped, PostgreSQL refusing connections, fakes answering errors.
Nothing a customer sent may be lost, nothing may be sent twice, and the operator hears about it."""

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, func, select, text

from app.config import settings
from app.db import engine, session_scope
from app.models import (
    Conversation,
    Handover,
    Message,
    MessageRole,
    OutboxChannel,
    OutboxItem,
    OutboxKind,
    OutboxStatus,
)
from app.services.channels import outbox
from app.services.conversation import turn
from app.services.operations import alerts
from app.services.replies import FALLBACK_RESPONSES
from tests.conftest import REDIS
from tests.helpers import chatflow_payload, wait_until

ADMIN = "test-admin-token"


@pytest.fixture(autouse=True)
def _fresh_alerts() -> Iterator[None]:
    alerts.reset()
    yield
    alerts.reset()


@contextlib.contextmanager
def redis_outage() -> Iterator[None]:
    """Stop the session's Redis server; always start it again."""
    REDIS.stop()
    try:
        yield
    finally:
        REDIS.start()


@contextlib.contextmanager
def postgres_outage() -> Iterator[None]:
    """The test database refuses connections and its open ones are terminated, as in an outage."""
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = engine.url.database
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(text(terminate), {"n": name})
    try:
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def _redrive_now(monkeypatch) -> None:
    monkeypatch.setattr(settings, "buffer_max_wait_seconds", 0)
    monkeypatch.setattr(turn, "_REDRIVE_GRACE", timedelta(0))
    turn.redrive_turns()


def _count(model, *where) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# --- Redis ----------------------------------------------------------------------------------------------


def test_redis_down_webhooks_are_accepted_and_answered_when_it_returns(api, make_client, llm, chatflow, monkeypatch):
    make_client("salon")
    with redis_outage():
        first = api.post("/webhook/salon", json=chatflow_payload("Здравствуйте, вы открыты?", message_id="R-1"))
        again = api.post("/webhook/salon", json=chatflow_payload("Здравствуйте, вы открыты?", message_id="R-1"))
        health = api.get("/health")
        assert first.json() == {"status": "ok"}
        assert again.json() == {"status": "duplicate"}  # PostgreSQL's constraint still de-duplicates
        assert health.status_code == 200 and health.json()["status"] == "degraded" and health.json()["redis"].startswith("error")
        assert any("Health check failed" in a and "redis" in a for a in alerts.sent)
        assert _count(Message, Message.role == MessageRole.USER) == 1
    wait_until(lambda: api.get("/health").json()["redis"] == "ok", timeout=10)
    assert any(a.startswith("✅ Health check OK") for a in alerts.sent)

    _redrive_now(monkeypatch)
    wait_until(lambda: chatflow.sent_texts(), timeout=15, message="the answer after Redis came back")
    time.sleep(0.5)
    assert len(chatflow.sent_texts()) == 1


# --- PostgreSQL -----------------------------------------------------------------------------------------


def test_postgres_down_webhook_gets_503_and_nothing_is_half_written(api, make_client, llm, chatflow):
    make_client("salon")
    payload = chatflow_payload("Можно записаться?", message_id="PG-1")
    with postgres_outage():
        response = api.post("/webhook/salon", json=payload)
        health = api.get("/health")
    assert response.status_code == 503 and response.headers.get("retry-after")
    assert health.status_code == 503 and health.json()["db"].startswith("error")
    assert _count(Message) == 0

    retry = api.post("/webhook/salon", json=payload)  # the gateway retries after a 5xx
    assert retry.json() == {"status": "ok"}
    assert len(wait_until(lambda: chatflow.sent_texts())) == 1


def test_webhook_survives_a_postgres_restart_between_requests(api, make_client, llm, chatflow):
    # PostgreSQL restarted while the webhook's pooled connections sat idle: the next delivery still lands.
    make_client("salon")
    assert api.post("/webhook/salon", json=chatflow_payload("Добрый день")).json() == {"status": "ok"}
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
    with admin.connect() as connection:
        connection.execute(text(terminate), {"n": engine.url.database})
    admin.dispose()
    assert api.post("/webhook/salon", json=chatflow_payload("Вы работаете сегодня?")).json() == {"status": "ok"}
    assert _count(Message, Message.role == MessageRole.USER) == 2


def test_turns_survive_a_postgres_restart_between_customers(api, make_client, llm, chatflow):
    # The turn, the outbox and this test read through the shared pool, whose connections all died with the
    # restart: each is found closed before use and replaced, so nothing fails and the customer is answered.
    make_client("salon")
    api.post("/webhook/salon", json=chatflow_payload("Добрый день", phone="77015550010"))
    assert len(wait_until(lambda: chatflow.sent_texts())) == 1
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
    with admin.connect() as connection:
        connection.execute(text(terminate), {"n": engine.url.database})
    admin.dispose()
    time.sleep(0.2)  # the backends exit (and close their sockets) just after pg_terminate_backend returns
    assert _count(Message, Message.role == MessageRole.USER) == 1
    assert api.post("/webhook/salon", json=chatflow_payload("Вы работаете сегодня?", phone="77015550010")).json() == {"status": "ok"}
    assert len(wait_until(lambda: len(chatflow.sent_texts()) >= 2 and chatflow.sent_texts(), timeout=15)) == 2
    time.sleep(0.5)
    assert len(chatflow.sent_texts()) == 2
    assert _count(OutboxItem, OutboxItem.status != OutboxStatus.SENT) == 0


def test_webhook_blocked_on_postgres_answers_503_in_bounded_time_and_the_retry_lands(api, make_client, llm, chatflow):
    # A lock held too long (a stuck transaction) must not hold the gateway's request: 503, then its retry works.
    make_client("salon")
    assert api.post("/webhook/salon", json=chatflow_payload("Здравствуйте", phone="77015550009")).json()["status"] == "ok"
    payload = chatflow_payload("Вы работаете сегодня?", phone="77015550009", message_id="LOCKED-1")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        with session_scope() as session:
            session.execute(select(Conversation).with_for_update())
            pending = pool.submit(api.post, "/webhook/salon", json=payload)
            done, _ = concurrent.futures.wait([pending], timeout=6)  # WEBHOOK_DB_TIMEOUT_SECONDS=2.5 in the tests
        assert done, "the webhook waited on the lock past its timeout"
    response = pending.result()
    assert response.status_code == 503 and response.headers.get("retry-after")
    assert api.post("/webhook/salon", json=payload).json()["status"] == "ok"
    assert _count(Message, Message.role == MessageRole.USER) == 2


# --- OpenAI ---------------------------------------------------------------------------------------------


def test_openai_rate_limited_twice_falls_back_and_escalates(api, make_client, llm, chatflow):
    make_client("salon")
    llm.rate_limit(retry_after=0, times=None)
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит?"))
    assert wait_until(lambda: chatflow.sent_texts()) == [FALLBACK_RESPONSES["ai_error"]]
    assert len(llm.requests_to("/chat/completions")) == 2
    assert _count(Handover, Handover.reason == "ai_error") == 1


def test_openai_timeout_is_bounded(api, make_client, llm, chatflow, monkeypatch):
    monkeypatch.setattr(settings, "openai_timeout_seconds", 0.5)
    make_client("salon")
    llm.delay(5, times=None)
    started = time.monotonic()
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит?"))
    assert wait_until(lambda: chatflow.sent_texts(), timeout=10) == [FALLBACK_RESPONSES["ai_error"]]
    assert time.monotonic() - started < 0.5 * 2 + 1.5 + 1.0  # two timeouts, one back-off, buffer and slack


def test_openai_garbage_is_a_failure_not_a_crash(api, make_client, llm, chatflow):
    make_client("salon")
    llm.garbage(times=None)
    api.post("/webhook/salon", json=chatflow_payload("Привет"))
    assert wait_until(lambda: chatflow.sent_texts()) == [FALLBACK_RESPONSES["ai_error"]]


# --- ChatFlow and Telegram ------------------------------------------------------------------------------


def test_chatflow_down_gives_up_with_an_alert_and_a_restart_sends_once(api, make_client, llm, chatflow, monkeypatch):
    make_client("salon")
    monkeypatch.setattr(outbox, "_BACKOFF_SECONDS", (600,))  # only the sweep below may send
    chatflow.fail(502, times=None)
    api.post("/webhook/salon", json=chatflow_payload("Привет"))
    wait_until(lambda: _outbox_state() == (OutboxStatus.PENDING, 1), message="first attempt failed, retry scheduled")

    # The process "restarts": its in-memory retry job is gone; the sweep finds the due item.
    with session_scope() as session:
        session.execute(text("UPDATE outbox SET next_attempt_at = now() - interval '1 minute'"))
    chatflow.clear_faults()
    assert outbox.redrive() == 1
    wait_until(lambda: _outbox_status() == OutboxStatus.SENT)
    outbox.redrive()
    time.sleep(0.5)
    assert len(chatflow.sent_texts()) == 1

    monkeypatch.setattr(settings, "outbox_max_attempts", 1)
    chatflow.fail(502, times=None)
    api.post("/webhook/salon", json=chatflow_payload("Ещё вопрос", phone="77010000123"))
    wait_until(lambda: _count(OutboxItem, OutboxItem.status == OutboxStatus.FAILED) == 1)
    assert any("Could not deliver a whatsapp message for client 'salon'" in a for a in alerts.sent)


def test_an_item_written_before_an_upgrade_is_delivered_and_an_unreadable_one_given_up_at_once(make_client, chatflow):
    client = make_client("salon")
    with session_scope() as session:
        readable, unreadable = (
            OutboxItem(client_id=client.id, channel=OutboxChannel.WHATSAPP, kind=OutboxKind.TEXT, payload=payload)
            for payload in ({"phone": "77010000001", "parts": ["Здравствуйте!"]}, {"to": "77010000001", "text": "Здравствуйте!"})
        )
        session.add_all([readable, unreadable])
    assert outbox.deliver(readable.id) == outbox.DeliveryOutcome.SENT
    assert chatflow.sent_texts("77010000001") == ["Здравствуйте!"]
    # Retrying a payload this code cannot read would never succeed: it is given up on (and alerted) at once.
    assert outbox.deliver(unreadable.id) == outbox.DeliveryOutcome.FAILED
    assert any("Could not deliver a whatsapp message for client 'salon'" in a for a in alerts.sent)


def test_alerts_reach_the_operator_chat_and_a_failing_alert_is_only_logged(telegram, monkeypatch, caplog):
    monkeypatch.setattr(settings, "alert_chat_id", -100999)
    monkeypatch.setattr(settings, "telegram_bot_token", SecretStr("100002:alerts-bot"))
    assert alerts.fire("health", "Health check failed: redis=error")
    assert not alerts.fire("health", "Health check failed: redis=error")  # rate-limited
    wait_until(lambda: telegram.messages(-100999), message="alert in the operator chat")
    assert "Health check failed" in telegram.messages(-100999)[0].text

    telegram.fail(500, times=None)
    assert alerts.clear("health", "Health check OK again")
    wait_until(lambda: any(r.message == "alert.delivery_failed" for r in caplog.records), message="delivery failure logged")


def test_error_burst_and_slow_answers_raise_alerts_and_clear():
    for _ in range(5):
        alerts.record_error()
    alerts.record_response(12.0)
    alerts.evaluate()
    assert any("5 errors" in a for a in alerts.sent)
    assert any("Average response time 12.0 s" in a for a in alerts.sent)

    alerts._state.errors.clear()
    alerts._state.responses.clear()
    alerts.evaluate()
    assert any(a.startswith("✅ Error rate back to normal") for a in alerts.sent)
    assert any(a.startswith("✅ Response time back to normal") for a in alerts.sent)


# --- load and bad input ---------------------------------------------------------------------------------


def test_exactly_once_under_load(api, make_client, llm, chatflow):
    """200 distinct messages, each delivered three times concurrently: exactly 200 WhatsApp sends."""
    make_client("salon", settings={"buffer_wait_seconds": 0.2})
    payloads = [chatflow_payload(f"Вопрос {i}", phone=f"7701{i:07d}", message_id=f"LOAD-{i}") for i in range(200)]
    deliveries = [p for p in payloads for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        statuses = [r.status_code for r in pool.map(lambda p: api.post("/webhook/salon", json=p), deliveries)]
    assert statuses.count(200) == 600

    wait_until(lambda: len(chatflow.sent_texts()) >= 200, timeout=120, interval=0.5, message="200 answers")
    time.sleep(1.5)
    sent = chatflow.sent()
    assert len(sent) == 200
    assert len({m.jid for m in sent}) == 200
    assert _count(Message, Message.role == MessageRole.USER) == 200


# --- operator endpoints ---------------------------------------------------------------------------------


def test_debug_shows_a_customer_to_the_operator_only(api, make_client, llm, chatflow, monkeypatch):
    make_client("salon")
    make_client("clinic")
    api.post("/webhook/salon", json=chatflow_payload("Позовите менеджера", phone="77015705555"))
    wait_until(lambda: chatflow.sent_texts())
    monkeypatch.setattr(settings, "admin_token", SecretStr(ADMIN))
    auth = {"Authorization": f"Bearer {ADMIN}"}

    assert api.get("/debug/77015705555").status_code == 401
    assert api.get("/debug/77015705555", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/debug/77000000000", headers=auth).status_code == 404
    body = api.get("/debug/+7 701 570 5555", headers=auth).json()
    assert body["phone"] == "77015705555" and body["client"] == "salon"
    assert body["conversation"]["state"] == "pending" and body["conversation"]["bot_status"] == "muted"
    assert body["active_handover"]["status"] == "pending" and body["active_handover"]["assigned_to"] is None
    assert [m["role"] for m in body["recent_messages"]] == ["user", "assistant"]

    api.post("/webhook/clinic", json=chatflow_payload("Здравствуйте", phone="77015705555"))
    wait_until(lambda: len(chatflow.sent_texts()) == 2)
    ambiguous = api.get("/debug/77015705555", headers=auth)
    assert ambiguous.status_code == 422 and "client=SLUG" in ambiguous.json()["detail"]
    assert api.get("/debug/77015705555?client=clinic", headers=auth).json()["client"] == "clinic"


def test_debug_is_off_without_an_admin_token(api):
    assert api.get("/debug/77015705555").status_code == 503


def test_metrics_count_what_happened(api, make_client, llm, chatflow, monkeypatch):
    monkeypatch.setattr(settings, "metrics_token", SecretStr("test-metrics-token"))
    make_client("metrics-salon")
    api.post("/webhook/metrics-salon", json=chatflow_payload("Привет"))
    wait_until(lambda: chatflow.sent_texts())
    time.sleep(0.2)
    body = api.get("/metrics", headers={"Authorization": "Bearer test-metrics-token"}).text
    assert 'truffles_messages_received_total{client="metrics-salon"}' in body
    assert 'truffles_turns_processed_total{client="metrics-salon",outcome="answer"}' in body
    assert 'truffles_ai_calls_total{client="metrics-salon",purpose="answer"}' in body
    assert "truffles_response_seconds_bucket" in body and "truffles_queue_backlog" in body


def test_docs_are_off_in_production(api):
    assert api.get("/docs").status_code == 404
    assert api.get("/openapi.json").status_code == 404


def _outbox_status() -> str | None:
    with session_scope() as session:
        return session.scalar(select(OutboxItem.status).order_by(OutboxItem.created_at.desc()).limit(1))


def _outbox_state() -> tuple[str, int] | None:
    """Status and attempts of the newest item, read together (apart, a claim could fall between them)."""
    with session_scope() as session:
        row = session.execute(select(OutboxItem.status, OutboxItem.attempts).order_by(OutboxItem.created_at.desc()).limit(1)).first()
    return (row.status, row.attempts) if row else None


def test_failure_logs_carry_no_secrets_or_gateway_urls(api, make_client, llm, chatflow, telegram, monkeypatch, caplog):
    """Everything that goes wrong with ChatFlow and Telegram is logged without tokens, full URLs or phones."""
    import logging

    from app.utils.logging import JsonFormatter

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(settings, "outbox_max_attempts", 1)
    make_client("salon", chatflow_token="cf-secret-token-123", telegram_chat_id=-100321, telegram_bot_token="100004:tg-secret-token")
    chatflow.refuse("Invalid token", times=None)
    telegram.fail(500, times=None)
    api.post("/webhook/salon", json=chatflow_payload("Позовите менеджера", phone="77019998877"))
    wait_until(lambda: _count(OutboxItem, OutboxItem.status == OutboxStatus.FAILED) >= 1, timeout=20)

    monkeypatch.setattr(settings, "chatflow_url", "http://127.0.0.1:9/api/v1/send-text")  # nothing listens: connection refused
    api.post("/webhook/salon", json=chatflow_payload("Ещё", phone="77019998878"))
    wait_until(
        lambda: _count(OutboxItem, OutboxItem.status == OutboxStatus.FAILED, OutboxItem.channel == OutboxChannel.WHATSAPP) >= 2, timeout=20
    )

    logs = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert "whatsapp.send_failed" in logs and "telegram.call_failed" in logs
    for secret in ("cf-secret-token-123", "tg-secret-token", "77019998877", "77019998878", "send-text?", "test-openai-key"):
        assert secret not in logs
