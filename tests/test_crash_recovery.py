"""Service processes killed in the middle of a turn or a send (SIGKILL, as the kernel's OOM killer does): after a
restart, or with another worker process running, the customer gets exactly one answer within 30 seconds; a
send cut off mid-way is never repeated blindly. The real service runs in subprocesses, as the README starts it
(uvicorn, and `dramatiq app.worker` for the scale-out topology), on this session's database, fakes and Redis."""

import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import select, text, update

from app.config import settings
from app.db import session_scope
from app.models import Handover, OutboxItem, OutboxStatus, TurnLease
from tests.conftest import ELEVENLABS_KEY, WEBHOOK_SECRET
from tests.helpers import chatflow_payload, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


RECOVERY_SECONDS = 30  # the bound a customer may wait for an answer after a crash (issue #13)
ALERT_CHAT = -1009990001


class ServiceProcess:
    """A real service process: the API under uvicorn (as the README starts it), or `dramatiq app.worker`."""

    def __init__(self, env: dict[str, str], name: str, *, worker: bool = False) -> None:
        self.port = _free_port()
        self.env = {**env, "QDRANT_PATH": f"{env['QDRANT_PATH']}-{name}"}  # the embedded store is one process's
        self.worker = worker
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"truffles-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> None:
        if self.worker:
            command = [sys.executable, "-m", "dramatiq", "app.worker", "--processes", "1", "--threads", "4"]
        else:
            command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if self.worker:
            wait_until(self._worker_booted, timeout=60, interval=0.2, message="the worker process to start")
        else:
            wait_until(self._healthy, timeout=60, interval=0.2, message="the service process to start")

    def _healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.output()
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _worker_booted(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.output()
        return "worker.started" in self.output()

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log.close()

    def post(self, slug: str, payload: dict[str, Any]) -> int:
        headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
        return requests.post(f"http://127.0.0.1:{self.port}/webhook/{slug}", json=payload, headers=headers, timeout=10).status_code


@pytest.fixture
def service_env(llm, chatflow, elevenlabs, telegram, tmp_path) -> Iterator[dict[str, str]]:
    """The README's defaults for leases and re-drive (LEASE_SECONDS=15, REDRIVE_INTERVAL_SECONDS=5); short
    waits so a test's turn is due at once; the operator's alerts to the fake Telegram."""
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"  # a queue of its own, apart from this process's worker
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "test-openai-key",
        "OPENAI_BASE_URL": llm.base_url,
        "CHATFLOW_URL": chatflow.send_text_url,
        "CHATFLOW_TIMEOUT_SECONDS": "60",
        "ELEVENLABS_API_KEY": ELEVENLABS_KEY,
        "ELEVENLABS_BASE_URL": elevenlabs.url,
        "ELEVENLABS_TIMEOUT_SECONDS": "60",
        "TELEGRAM_API_URL": telegram.url,
        "TELEGRAM_BOT_TOKEN": "100009:test-alert-bot",
        "ALERT_CHAT_ID": str(ALERT_CHAT),
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "BUFFER_WAIT_SECONDS": "0.2",
        "BUFFER_MAX_WAIT_SECONDS": "1",
        "LEASE_SECONDS": str(type(settings).model_fields["lease_seconds"].default),
        "REDRIVE_INTERVAL_SECONDS": str(type(settings).model_fields["redrive_interval_seconds"].default),
        "LOG_LEVEL": "INFO",
    }
    yield env
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.stop()


def _answered_once_within_the_bound(chatflow, since: float, expected: str, phone: str | None = None) -> None:
    wait_until(lambda: chatflow.sent_texts(phone), timeout=90, interval=0.2, message="the answer after the crash")
    elapsed = time.monotonic() - since
    print(f"answered {elapsed:.1f} s after the crash")
    time.sleep(6)  # another re-drive tick and a lease's worth of time: nothing may be sent again
    assert chatflow.sent_texts(phone) == [expected]
    assert elapsed <= RECOVERY_SECONDS, f"answered {elapsed:.1f} s after the crash"


@pytest.mark.slow
def test_killed_during_the_model_call_the_customer_gets_exactly_one_answer(service_env, processes, make_client, llm, chatflow):
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    llm.latency = 60.0  # the model is "thinking" when the process dies
    first, second = ServiceProcess(service_env, "first"), ServiceProcess(service_env, "second")
    processes += [first, second]
    first.start()
    assert first.post("salon", chatflow_payload("Вы сегодня работаете?", message_id="CRASH-1")) == 200
    wait_until(lambda: llm.requests, timeout=30, message="the turn reaching the model")
    first.kill()
    crashed = time.monotonic()
    assert chatflow.sent_texts() == []

    llm.latency = 0.0
    second.start()  # at once
    _answered_once_within_the_bound(chatflow, crashed, "Да, мы работаем до 20:00.")
    assert "turn.taken_over" in second.output()


@pytest.mark.slow
def test_killed_during_transcription_the_customer_gets_exactly_one_answer(service_env, processes, make_client, llm, chatflow, elevenlabs):
    make_client("salon")
    llm.set_reply("Стрижка стоит 5000 тенге.")
    elevenlabs.latency = 60.0  # the voice note is being transcribed when the process dies
    first, second = ServiceProcess(service_env, "first"), ServiceProcess(service_env, "second")
    processes += [first, second]
    first.start()
    voice = {"mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 4, "fileName": None, "caption": None}
    voice["base64"] = base64.b64encode("Сколько стоит стрижка?".encode()).decode()
    assert first.post("salon", chatflow_payload("", messageType="audio", mediaData=voice)) == 200
    wait_until(lambda: elevenlabs.requests, timeout=30, message="the turn reaching speech recognition")
    first.kill()
    crashed = time.monotonic()

    elevenlabs.latency = 0.0
    second.start()
    _answered_once_within_the_bound(chatflow, crashed, "Стрижка стоит 5000 тенге.")
    assert llm.chat_requests()[-1]["messages"][-1]["content"] == "Сколько стоит стрижка?"


@pytest.mark.slow
def test_killed_during_a_chatflow_send_it_is_not_repeated_and_the_operator_is_told(
    service_env, processes, make_client, llm, chatflow, telegram
):
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    chatflow.delay(20.0, times=1)  # the gateway takes the message, and answers late: the process is gone by then
    first, second = ServiceProcess(service_env, "first"), ServiceProcess(service_env, "second")
    processes += [first, second]
    first.start()
    assert first.post("salon", chatflow_payload("Вы сегодня работаете?", message_id="CRASH-3")) == 200
    wait_until(lambda: [r for r in chatflow.requests if r.path.endswith("/send-text")], timeout=30, message="the answer being sent")
    assert chatflow.sent_texts() == []  # the gateway has it, and has not answered yet
    first.kill()
    crashed = time.monotonic()

    second.start()
    _answered_once_within_the_bound(chatflow, crashed, "Да, мы работаем до 20:00.")  # the one the gateway took

    def alerted() -> list[str]:
        return [
            c["text"]
            for c in telegram.calls("sendMessage")
            if str(c.get("chat_id")) == str(ALERT_CHAT) and "may not have arrived" in c["text"]
        ]

    assert len(wait_until(alerted, timeout=RECOVERY_SECONDS, message="the operator's alert")) == 1
    with session_scope() as session:
        assert session.scalar(select(OutboxItem.status)) == OutboxStatus.UNCERTAIN


@pytest.mark.slow
def test_scale_out_topology_one_api_and_two_workers(service_env, processes, make_client, llm, chatflow, telegram):
    """WORKER_MODE=off plus two `dramatiq app.worker` processes: a handover reminder fires once, and a worker
    killed during the model call has its turn answered once by the other."""
    make_client("salon", telegram_chat_id=-1001234567890, telegram_bot_token="100001:test-bot-token")
    env = {**service_env, "MAINTENANCE_INTERVAL_SECONDS": "1"}
    api = ServiceProcess({**env, "WORKER_MODE": "off"}, "api")
    workers = [ServiceProcess(env, "worker-a", worker=True), ServiceProcess(env, "worker-b", worker=True)]
    processes += [api, *workers]
    for process in (api, *workers):
        process.start()

    # A customer asks for a manager; the handover is then left unanswered past the reminder.
    assert api.post("salon", chatflow_payload("Позовите менеджера", phone="77010000002")) == 200
    wait_until(lambda: _count_handovers() == 1 and chatflow.sent_texts("77010000002"), timeout=30, message="the handover")
    with session_scope() as session:
        session.execute(update(Handover).values(created_at=text("now() - interval '40 minutes'")))

    def reminders() -> list[str]:
        return [c["text"] for c in telegram.calls("sendMessage") if c["text"].startswith("⏰")]

    wait_until(reminders, timeout=30, message="the reminder")
    time.sleep(4)  # several more ticks, in both workers
    assert len(reminders()) == 1

    # A worker dies while the model thinks: the other answers, once.
    llm.set_reply("Да, мы работаем до 20:00.")
    llm.latency = 60.0
    assert api.post("salon", chatflow_payload("Вы сегодня работаете?", phone="77010000003")) == 200
    wait_until(lambda: llm.requests, timeout=30, message="the turn reaching the model")
    owner = wait_until(_lease_owner, timeout=10, message="the turn's lease")
    llm.latency = 0.0
    os.kill(int(owner.split(":")[1]), signal.SIGKILL)  # the worker process answering it (a child of one dramatiq)
    crashed = time.monotonic()
    _answered_once_within_the_bound(chatflow, crashed, "Да, мы работаем до 20:00.", phone="77010000003")


def _count_handovers() -> int:
    with session_scope() as session:
        return len(session.scalars(select(Handover.id)).all())


def _lease_owner() -> str | None:
    with session_scope() as session:
        return session.scalar(select(TurnLease.owner).where(TurnLease.lease_until.is_not(None)))


@pytest.mark.slow
def test_a_stalled_worker_whose_turn_was_taken_over_drops_its_result(service_env, processes, make_client, llm, chatflow):
    """SIGSTOP (a stall: a frozen VM, a GC pause) during the model call: the lease expires, another process
    answers; the stalled one resumes, finds its lease's version moved on, and sends nothing."""
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    llm.latency = 20.0
    first, second = ServiceProcess(service_env, "first"), ServiceProcess(service_env, "second")
    processes += [first, second]
    first.start()
    second.start()
    assert first.post("salon", chatflow_payload("Вы сегодня работаете?", message_id="STALL-1")) == 200
    wait_until(lambda: llm.requests, timeout=30, message="the turn reaching the model")
    owner = wait_until(_lease_owner, timeout=10, message="the turn's lease")
    stalled = first if owner.split(":")[1] == str(first.process and first.process.pid) else second
    assert stalled.process is not None
    llm.latency = 0.0
    stalled.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_until(lambda: chatflow.sent_texts(), timeout=90, interval=0.2, message="the other process's answer")
        assert time.monotonic() - stopped <= RECOVERY_SECONDS
    finally:
        stalled.process.send_signal(signal.SIGCONT)
    wait_until(lambda: "turn.lease_lost" in stalled.output(), timeout=60, message="the stalled worker dropping its result")
    time.sleep(2)
    assert chatflow.sent_texts() == ["Да, мы работаем до 20:00."]
