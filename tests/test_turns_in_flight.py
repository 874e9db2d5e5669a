"""Turns in flight are not bounded by a small thread pool, and no thread holds a PostgreSQL connection while a
model, a transcription or a gateway answers, so the pools stay within what PostgreSQL allows by default."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.worker import WorkerThread
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from app import db, queue
from app.config import Settings
from fakes.base import FakeServer
from tests.helpers import chatflow_payload, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]  # the defaults, whatever this session's environment


def _default(name: str) -> Any:
    return type(DEFAULTS).model_fields[name].default


def test_one_api_and_two_workers_fit_in_postgres_default_connections():
    budget = db.ConnectionBudget(webhook=_default("http_threads"), shared=_default("db_pool_size") + _default("db_max_overflow"))

    assert budget.api_process == 32 + 15 + 1  # the webhook's 32 request threads, the pool of everything else, the heartbeat
    assert budget.worker_process == 15 + 1  # worker threads share the pool: 64 of them add no connection
    assert budget.total(worker_processes=2) == 80 <= db.POSTGRES_DEFAULT_CONNECTIONS
    assert _default("worker_threads") >= 64


def test_the_pools_are_built_as_the_budget_says(api):
    budget = db.connection_budget()
    shared, webhook = cast(QueuePool, db.engine.pool), cast(QueuePool, db._autocommit_engine.pool)
    assert shared.size() + shared._max_overflow == budget.shared
    assert webhook.size() == budget.webhook and webhook._max_overflow == 0
    with db.engine.connect() as connection:
        allowed = int(connection.scalar(text("SHOW max_connections")) or 0)
        reserved = int(connection.scalar(text("SHOW superuser_reserved_connections")) or 0)
    assert allowed - reserved == db.POSTGRES_DEFAULT_CONNECTIONS  # this server runs PostgreSQL's defaults
    assert budget.total(worker_processes=2) <= allowed - reserved


@contextmanager
def _connection_holders() -> Iterator[dict[int, int]]:
    """Which threads hold a pooled PostgreSQL connection right now (thread id -> connections), via the pool's events."""
    holders: dict[int, int] = {}
    lock = threading.Lock()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        with lock:
            record.info["holder"] = threading.get_ident()
            holders[threading.get_ident()] = holders.get(threading.get_ident(), 0) + 1

    def checkin(dbapi_connection: Any, record: Any) -> None:
        with lock:
            holder = record.info.pop("holder", None)
            if holder in holders:
                holders[holder] -= 1
                if not holders[holder]:
                    del holders[holder]

    engines: list[Engine] = [db.engine, db._autocommit_engine]
    for engine in engines:
        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", checkin)
    try:
        yield holders
    finally:
        for engine in engines:
            event.remove(engine, "checkout", checkout)
            event.remove(engine, "checkin", checkin)


def _worker_threads_holding(holders: dict[int, int]) -> list[str]:
    threads = {thread.ident: thread for thread in threading.enumerate()}
    return [threads[ident].name for ident in list(holders) if isinstance(threads.get(ident), WorkerThread)]


def _in_flight(fake: FakeServer, path: str = "") -> int:
    return sum(1 for request in fake.requests if request.status is None and path in request.path)


def test_no_connection_is_held_while_the_gateway_the_transcriber_or_the_model_answers(api, make_client, llm, chatflow, elevenlabs):
    make_client("salon")
    llm.set_reply("Стрижка стоит 5000 тенге.")
    for fake in (llm, chatflow, elevenlabs):
        fake.latency = 0.4  # long enough to be watched while it answers
    url = chatflow.host_media("voice-1.ogg", "Сколько стоит стрижка?".encode(), "audio/ogg")
    media = {"url": url, "mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 3}
    seen: dict[str, list[list[str]]] = {"download": [], "transcription": [], "model": [], "send": []}
    stop = threading.Event()

    def watch(holders: dict[int, int]) -> None:
        while not stop.is_set():
            held = _worker_threads_holding(holders)
            for name, busy in (
                ("download", _in_flight(chatflow, "/media/")),
                ("transcription", _in_flight(elevenlabs)),
                ("model", _in_flight(llm, "/chat/")),
                ("send", _in_flight(chatflow, "send")),
            ):
                if busy:
                    seen[name].append(held)
            time.sleep(0.01)

    with _connection_holders() as holders:
        watcher = threading.Thread(target=watch, args=(holders,), daemon=True)
        watcher.start()
        api.post("/webhook/salon", json=chatflow_payload("", phone="77015550909", messageType="audio", mediaData=media))
        wait_until(lambda: chatflow.sent_texts("77015550909"), timeout=15)
        stop.set()
        watcher.join(timeout=5)

    assert all(seen.values()), {name: len(samples) for name, samples in seen.items()}  # each call was watched in flight
    assert {name: [held for held in samples if held] for name, samples in seen.items()} == {name: [] for name in seen}


_WORKER_AT_DEFAULTS = """
import sys, time
from app import bootstrap
bootstrap.configure_logging()
with bootstrap.background_work():
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
"""


def test_a_worker_at_the_defaults_keeps_64_model_calls_in_flight(api, make_client, llm, chatflow, tmp_path):
    # A worker process of its own, started with the defaults (the session's in-process worker has 4 threads).
    make_client("salon")
    llm.latency = 5.0  # longer than posting all the messages takes, on a busy machine too
    llm.set_reply("Маникюр стоит 8000 тенге.")
    env = {key: value for key, value in os.environ.items() if key not in ("WORKER_THREADS", "WORKER_POLL_MS")}
    env.update(OPENAI_API_KEY="test-openai-key", OPENAI_BASE_URL=llm.base_url, CHATFLOW_URL=chatflow.send_text_url)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER_AT_DEFAULTS], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: "ready" in log.read_text().split(), timeout=60, message="the worker started")
        phones = [f"7701{index:07d}" for index in range(80)]
        for phone in phones:
            assert api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр", phone=phone)).status_code == 200
        most = 0

        def all_answered() -> bool:
            nonlocal most
            most = max(most, _in_flight(llm, "/chat/"))
            return len({message.jid for message in chatflow.sent()}) == len(phones)

        wait_until(all_answered, timeout=60, interval=0.02)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert most >= 64, log.read_text()[-3000:]
    assert sorted(message.phone for message in chatflow.sent()) == sorted(phones)  # each answered exactly once


def test_idle_worker_threads_wake_once_a_second_and_a_job_still_runs_at_once():
    stub = StubBroker()
    ran = threading.Event()
    dramatiq.actor(actor_name="ping", broker=stub)(ran.set)
    worker = queue.start_worker(stub, 8, 10)
    try:
        assert {thread.timeout for thread in worker.workers} == {1.0}  # not every 10 ms: 8 threads, 800 wake-ups a second
        time.sleep(1.2)  # every thread idle, waiting
        started = time.monotonic()
        stub.enqueue(dramatiq.Message(queue_name="default", actor_name="ping", args=(), kwargs={}, options={}))
        assert ran.wait(timeout=2)
        assert time.monotonic() - started < 0.5  # a job wakes an idle thread at once
    finally:
        worker.stop(timeout=10_000)
