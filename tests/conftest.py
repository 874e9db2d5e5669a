"""Test set-up: a fresh PostgreSQL database built by the migrations, a Redis database of its own, the real
app with its in-process worker, and local fakes of OpenAI, ChatFlow, Telegram and ElevenLabs."""

# Settings are read once at import: point them at test resources before anything from app is imported.
# Every pytest session gets a PostgreSQL database and a Redis server of its own (started here on a free
# port), so parallel runs never collide and tests can stop Redis for real.
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zlib

_TEST_DB = os.environ.get("TEST_DATABASE_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/truffles_test_{os.getpid()}")


class RedisServer:
    """A private redis-server for the session; stop() and start() simulate an outage on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: the tests run their own Redis (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the test redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


REDIS = RedisServer()
REDIS.start()
atexit.register(REDIS.stop)
os.environ.update(
    {
        "DATABASE_URL": _TEST_DB,
        "REDIS_URL": REDIS.url,
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "CHATFLOW_URL": "",
        "CHATFLOW_TOKEN": "",
        "CHATFLOW_INSTANCE_ID": "",
        "TELEGRAM_BOT_TOKEN": "",
        "TELEGRAM_WEBHOOK_SECRET": "",
        "ELEVENLABS_API_KEY": "",
        "ADMIN_TOKEN": "",
        "ALERT_CHAT_ID": "",
        "QDRANT_URL": "",
        "QDRANT_HOST": "",
        "QDRANT_PATH": tempfile.mkdtemp(prefix="truffles-qdrant-"),
        "BUFFER_WAIT_SECONDS": "0.3",
        "BUFFER_MAX_WAIT_SECONDS": "3",
        "WEBHOOK_DB_TIMEOUT_SECONDS": "2.5",
        "WORKER_THREADS": "4",
        "WORKER_POLL_MS": "10",
        "MAINTENANCE_INTERVAL_SECONDS": "3600",
        "REDRIVE_INTERVAL_SECONDS": "3600",  # tests re-drive when they mean to (test_crash_recovery: the defaults)
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "DEBUG": "false",
        # Tokens are stored encrypted: a key of this session's own (a Fernet key is 32 url-safe base64 bytes).
        "SECRETS_KEY": __import__("base64").urlsafe_b64encode(os.urandom(32)).decode(),
        "METRICS_TOKEN": "",
        "HEALTH_CACHE_SECONDS": "0",  # tests watch /health follow an outage at once; test_exposure sets a cache
    }
)

from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import uvicorn  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

_url = make_url(_TEST_DB)


def _recreate_database() -> None:
    """Drop and create the test database, then build it with `alembic upgrade head` as production does."""
    admin = create_engine(_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{_url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{_url.database}"'))
    admin.dispose()
    config = Config(os.path.join(os.path.dirname(__file__), "..", "alembic.ini"))
    command.upgrade(config, "head")


def _drop_database() -> None:
    admin = create_engine(_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{_url.database}" WITH (FORCE)'))
    admin.dispose()


_recreate_database()

from fastapi.testclient import TestClient  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from app import bootstrap, db  # noqa: E402
from app.config import settings  # noqa: E402
from app.db import engine, session_scope  # noqa: E402
from app.main import app  # noqa: E402
from app.models import Base  # noqa: E402
from app.queue import broker  # noqa: E402
from app.redis_client import redis_client  # noqa: E402
from app.services import clients  # noqa: E402
from app.services.knowledge import qdrant  # noqa: E402
from fakes.chatflow import FakeChatFlow  # noqa: E402
from fakes.elevenlabs import FakeElevenLabs  # noqa: E402
from fakes.openai_api import FakeOpenAI  # noqa: E402
from fakes.telegram import FakeTelegram  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

_TABLES = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)


@pytest.fixture(scope="session", autouse=True)
def _session_resources() -> Iterator[None]:
    """The process wired as the service wires itself (also for tests that deliver without the app running);
    this session's database and Redis database released when it ends."""
    bootstrap.wire()
    yield
    qdrant.close()
    shutil.rmtree(os.environ["QDRANT_PATH"], ignore_errors=True)
    db.dispose()
    _drop_database()
    REDIS.stop()


# Every test client's webhook secret (make_client), sent by the `api` client unless a test sends its own.
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def api() -> Iterator[TestClient]:
    """The app with its lifespan: the in-process Dramatiq worker is running. It sends the test clients'
    webhook secret as ChatFlow does (a test may send another or none)."""
    with TestClient(app, headers={"X-Webhook-Secret": WEBHOOK_SECRET}) as client:
        yield client


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    """Each test starts from empty tables and an empty Redis database."""
    _wait_for_jobs_in_flight()
    # The previous test's background jobs may still hold row locks: retry rather than deadlock.
    for attempt in range(50):
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '1s'"))
                connection.execute(text(f"TRUNCATE {_TABLES} CASCADE"))
            break
        except OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    redis_client.flushdb()
    bootstrap.forget_process_state()
    yield


def _wait_for_jobs_in_flight(timeout: float = 5.0) -> None:
    """Let the previous test's running jobs finish: a delivery between two retries would otherwise land on
    this test's fakes (an old card edit overwriting a new one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        acks = broker.client.keys(f"{broker.namespace}:__acks__.*")
        if not acks or not any(broker.client.scard(key) for key in acks):
            return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def _chatflow_server() -> Iterator[FakeChatFlow]:
    with FakeChatFlow() as server:
        yield server


@pytest.fixture
def llm(_openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """OpenAI configured and served by the local fake (the real SDK talks to it over HTTP)."""
    _openai_server.reset()
    _openai_server.latency = 0.0
    monkeypatch.setattr(settings, "openai_api_key", SecretStr("test-openai-key"))
    monkeypatch.setattr(settings, "openai_base_url", _openai_server.base_url)
    return _openai_server


@pytest.fixture
def chatflow(_chatflow_server: FakeChatFlow, monkeypatch: pytest.MonkeyPatch) -> FakeChatFlow:
    """ChatFlow configured and served by the local fake."""
    _chatflow_server.reset()
    _chatflow_server.latency = 0.0
    monkeypatch.setattr(settings, "chatflow_url", _chatflow_server.send_text_url)
    return _chatflow_server


ELEVENLABS_KEY = "test-elevenlabs-key"


@pytest.fixture(scope="session")
def _elevenlabs_server() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs(api_key=ELEVENLABS_KEY) as server:
        yield server


@pytest.fixture
def elevenlabs(_elevenlabs_server: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch) -> FakeElevenLabs:
    """ElevenLabs speech-to-text served by the local fake; media may be downloaded from 127.0.0.1."""
    _elevenlabs_server.reset()
    _elevenlabs_server.latency = 0.0
    monkeypatch.setattr(settings, "elevenlabs_api_key", SecretStr(ELEVENLABS_KEY))
    monkeypatch.setattr(settings, "elevenlabs_base_url", _elevenlabs_server.url)
    monkeypatch.setattr(settings, "elevenlabs_model", "scribe_v1")
    monkeypatch.setattr(settings, "elevenlabs_timeout_seconds", 2.0)
    monkeypatch.setattr(settings, "media_allow_private_hosts", True)
    monkeypatch.setattr(settings, "media_allowed_hosts", ["127.0.0.1"])
    return _elevenlabs_server


TELEGRAM_SECRET = "test-telegram-webhook-secret"


@pytest.fixture(scope="session")
def _telegram_server() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def telegram(_telegram_server: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> FakeTelegram:
    """The Telegram Bot API served by the local fake, and the webhook secret the service expects."""
    _telegram_server.reset()
    _telegram_server.latency = 0.0
    monkeypatch.setattr(settings, "telegram_api_url", _telegram_server.url)
    monkeypatch.setattr(settings, "telegram_webhook_secret", SecretStr(TELEGRAM_SECRET))
    return _telegram_server


@pytest.fixture
def make_client(telegram: FakeTelegram) -> Callable[..., Any]:
    """Create a client with ChatFlow credentials and, unless told otherwise, a Telegram group of its own on the
    fake Telegram (managers can be told); returns its ClientInfo-like row snapshot."""

    def create(slug: str = "salon", **fields: Any) -> Any:
        fields.setdefault("name", slug.title())
        if "telegram_chat_id" not in fields:
            fields["telegram_chat_id"] = -1_009_000_000_000 - zlib.crc32(slug.encode())
            fields.setdefault("telegram_bot_token", "100001:test-bot-token")
        fields.setdefault("webhook_secret", WEBHOOK_SECRET)
        fields.setdefault("chatflow_token", f"cf-token-{slug}")
        fields.setdefault("chatflow_instance_id", f"inst-{slug}")
        with session_scope() as session:
            return clients.create(session, slug=slug, **fields)

    return create


@pytest.fixture
def live_url(api: TestClient) -> Iterator[str]:
    """The app on a real port (the session's in-process worker and embedded store), for commands that use HTTP."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, message="uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)
