"""The job queue: Dramatiq over Redis. Services enqueue jobs by name; app/bootstrap.py declares the actors
that run them and hands this broker to the worker. Importing this module only builds the broker object."""

from enum import StrEnum

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from app.config import settings

QUEUE = "default"
# Conversations whose turn is scheduled, by due time (scheduling.py dispatches them onto QUEUE when due)
TURNS_DUE_KEY = "turns:due"


class Job(StrEnum):
    """The actors' names (see bootstrap.py)."""

    PROCESS_TURN = "process_turn"
    DELIVER_OUTBOX = "deliver_outbox"


broker = RedisBroker(  # type: ignore[no-untyped-call]  # Dramatiq's Redis broker has no annotated __init__
    client=redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    ),
    namespace="truffles",
    # A killed worker's unacknowledged jobs go back on the queue after this long without heartbeats.
    heartbeat_timeout=30_000,
)


# An idle worker thread wakes this often, only to notice a shutdown. Dramatiq's one timeout would otherwise
# wake each of the many threads every WORKER_POLL_MS (64 threads: 3200 wake-ups a second, each taking the
# GIL from the webhook's threads); a job still reaches an idle thread at once (a queue put wakes it).
_IDLE_THREAD_WAKE_MS = 1000


def start_worker(on: dramatiq.Broker, threads: int, poll_ms: int) -> dramatiq.Worker:
    """Start a Dramatiq worker: its consumers look for jobs every `poll_ms` at most (Dramatiq backs off up to it
    when the queue is empty), its `threads` run them."""
    worker = dramatiq.Worker(on, worker_threads=threads, worker_timeout=poll_ms)
    worker.start()
    for thread in worker.workers:  # read by each thread's next wait on the work queue
        thread.timeout = _IDLE_THREAD_WAKE_MS / 1000
    return worker


def enqueue(job: Job, *args: str, delay_seconds: float = 0) -> None:
    """Put a job on the queue, optionally delayed. Raises redis errors: callers decide the fallback."""
    message: dramatiq.Message[None] = dramatiq.Message(queue_name=QUEUE, actor_name=job.value, args=args, kwargs={}, options={})
    delay_ms = int(delay_seconds * 1000)
    broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)


def backlog() -> int:
    """Jobs waiting on the queue, delayed ones and scheduled turns included."""
    client = broker.client
    jobs = sum(int(client.hlen(f"{broker.namespace}:{name}.msgs")) for name in (QUEUE, f"{QUEUE}.DQ"))
    return jobs + int(client.zcard(TURNS_DUE_KEY))
