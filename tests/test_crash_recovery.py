"""A service process killed in the middle of a turn: after a restart the customer gets exactly one answer."""

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
import requests

from app.config import settings
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import chatflow_payload, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """The real service under uvicorn in its own process, on the test database and its own Redis database."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="truffles-service-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._healthy, timeout=30, interval=0.2, message="the service process to start")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

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

    def post(self, slug: str, payload: dict[str, Any]) -> int:
        headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
        return requests.post(f"http://127.0.0.1:{self.port}/webhook/{slug}", json=payload, headers=headers, timeout=5).status_code


@pytest.fixture
def service_env(llm, chatflow, tmp_path) -> Iterator[dict[str, str]]:
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"  # a queue of its own, apart from this process's worker
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "test-openai-key",
        "OPENAI_BASE_URL": llm.base_url,
        "CHATFLOW_URL": chatflow.send_text_url,
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "BUFFER_WAIT_SECONDS": "0.2",
        "BUFFER_MAX_WAIT_SECONDS": "1",
        "TURN_LOCK_SECONDS": "2",
        "MAINTENANCE_INTERVAL_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    yield env


@pytest.mark.slow
def test_killed_mid_turn_the_customer_gets_exactly_one_answer(service_env, make_client, llm, chatflow):
    make_client("salon")
    llm.set_reply("Да, мы работаем до 20:00.")
    llm.latency = 30.0  # the model is "thinking" when the process dies

    first = ServiceProcess(service_env)
    second = ServiceProcess(service_env)
    try:
        first.start()
        assert first.post("salon", chatflow_payload("Вы сегодня работаете?", message_id="CRASH-1")) == 200
        wait_until(lambda: llm.requests, timeout=10, message="the turn reaching the model")
        first.kill()
        assert chatflow.sent_texts() == []

        llm.latency = 0.0
        second.start()
        wait_until(lambda: chatflow.sent_texts(), timeout=45, interval=0.3, message="the answer after the restart")
        time.sleep(3)  # more sweeps run: nothing may be sent again
        assert chatflow.sent_texts() == ["Да, мы работаем до 20:00."]
    finally:
        first.stop()
        second.stop()
