"""The job queue: Dramatiq over Redis. Services enqueue by actor name; app.worker defines the actors."""

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from app.config import settings

QUEUE = "default"
# Conversations whose turn is scheduled, by due time (scheduling dispatches them onto QUEUE when due)
TURNS_DUE_KEY = "turns:due"

broker = RedisBroker(
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
dramatiq.set_broker(broker)


def enqueue(actor_name: str, *args: str, delay_seconds: float = 0) -> None:
    """Put a job on the queue, optionally delayed. Raises redis errors: callers decide the fallback."""
    message: dramatiq.Message[None] = dramatiq.Message(queue_name=QUEUE, actor_name=actor_name, args=args, kwargs={}, options={})
    delay_ms = int(delay_seconds * 1000)
    broker.enqueue(message, delay=delay_ms if delay_ms > 0 else None)


def backlog() -> int:
    """Jobs waiting on the queue, delayed ones and scheduled turns included."""
    client = broker.client
    jobs = sum(int(client.hlen(f"{broker.namespace}:{name}.msgs")) for name in (QUEUE, f"{QUEUE}.DQ"))
    return jobs + int(client.zcard(TURNS_DUE_KEY))
