"""Debounce of a customer's rapid messages into one turn, its dispatch, and the per-conversation turn lock.

The turn state lives in Redis so every process agrees on it: a hash per conversation holding when the
turn started (`first`) and when it is due (`due`), and one sorted set of conversations by due time. The
webhook moves `due` and the set's score in one script (one round trip, no job enqueued on the request
path). A dispatcher thread in every worker process pops the conversations that are due and puts their
turn jobs on the queue. PostgreSQL stays the source of truth for which messages still need an answer, so
losing this state only delays a turn until the maintenance sweep re-drives it.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from redis.lock import Lock

from app import queue
from app.config import settings
from app.redis_client import redis_client
from app.services import turn_policy

logger = logging.getLogger(__name__)

PROCESS_TURN = "process_turn"
DUE_KEY = "turns:due"
_STATE_TTL_SECONDS = 3600
_DISPATCH_BATCH = 200

# KEYS[1] turn hash, KEYS[2] due set. ARGV: now_ms, wait_ms, max_wait_ms, ttl_s, conversation id. Returns due_ms.
_TOUCH = redis_client.register_script(
    """
    local now = tonumber(ARGV[1])
    local first = tonumber(redis.call('HGET', KEYS[1], 'first') or ARGV[1])
    local due = math.min(now + tonumber(ARGV[2]), first + tonumber(ARGV[3]))
    redis.call('HSET', KEYS[1], 'first', first, 'due', due)
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('ZADD', KEYS[2], due, ARGV[5])
    return due
    """
)

# KEYS[1] turn hash, KEYS[2] due set. ARGV: now_ms, conversation id. Returns 0 when the turn is due (state
# cleared), -1 when there is no state, or the due time in ms when it must wait longer (back in the set).
_CLAIM = redis_client.register_script(
    """
    local due = redis.call('HGET', KEYS[1], 'due')
    if not due then return -1 end
    if tonumber(due) > tonumber(ARGV[1]) then
        redis.call('ZADD', KEYS[2], due, ARGV[2])
        return tonumber(due)
    end
    redis.call('DEL', KEYS[1])
    return 0
    """
)

# KEYS[1] due set. ARGV: now_ms, batch. Pops and returns the conversations whose turn is due.
_POP_DUE = redis_client.register_script(
    """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
    if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
    return ids
    """
)


@dataclass(frozen=True)
class TurnTiming:
    wait_seconds: float
    max_wait_seconds: float


def _key(conversation_id: uuid.UUID) -> str:
    return f"turn:{conversation_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def wait_for(*, message_type: str, text: str, timing: TurnTiming) -> float:
    """How long to wait after this message for the customer to go on writing (see turn_policy)."""
    return turn_policy.wait_seconds(message_type=message_type, text=text, base_wait=timing.wait_seconds)


def schedule_turn(*, conversation_id: uuid.UUID, wait_seconds: float, max_wait_seconds: float) -> bool:
    """Note a new message of the conversation and move its turn's due time. False if Redis failed."""
    try:
        _TOUCH(
            keys=[_key(conversation_id), DUE_KEY],
            args=[
                _now_ms(),
                int(wait_seconds * 1000),
                int(max(max_wait_seconds, wait_seconds) * 1000),
                _STATE_TTL_SECONDS,
                str(conversation_id),
            ],
        )
        return True
    except redis.RedisError as exc:
        # The message is safe in PostgreSQL; the maintenance sweep schedules its turn once Redis is back.
        logger.warning("buffer.schedule_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
        return False


def claim_due(conversation_id: uuid.UUID) -> float:
    """0 when the turn should run now; otherwise the seconds until it is due (it stays scheduled)."""
    try:
        result = int(_CLAIM(keys=[_key(conversation_id), DUE_KEY], args=[_now_ms(), str(conversation_id)]))
    except redis.RedisError as exc:
        logger.warning("buffer.claim_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
        return 0.0
    if result <= 0:
        return 0.0
    return max(0.0, (result - _now_ms()) / 1000)


def enqueue_turn(conversation_id: uuid.UUID, *, delay_seconds: float = 0.0) -> None:
    """Have the conversation's turn dispatched in `delay_seconds` (or sooner if it is already due sooner).

    Raises redis errors."""
    redis_client.zadd(DUE_KEY, {str(conversation_id): _now_ms() + int(delay_seconds * 1000)}, lt=True)


def dispatch_due() -> int:
    """Put the turn jobs of every conversation that is due on the queue. Returns how many."""
    ids: list[Any] = _POP_DUE(keys=[DUE_KEY], args=[_now_ms(), _DISPATCH_BATCH])
    for raw in ids:
        conversation_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            queue.enqueue(PROCESS_TURN, conversation_id)
        except redis.RedisError:
            # Popped but not queued: back in the set for the next pass (or the maintenance sweep).
            redis_client.zadd(DUE_KEY, {conversation_id: _now_ms()}, lt=True)
            raise
    return len(ids)


class Dispatcher(dramatiq.Middleware):
    """Runs dispatch_due() every DISPATCH_POLL_MS in each worker process (in-process or `dramatiq app.worker`)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="turn-dispatcher", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = settings.dispatch_poll_ms / 1000
        failing = False
        while not self._stop.is_set():
            try:
                if dispatch_due() >= _DISPATCH_BATCH:
                    continue  # more are due: no pause
                failing = False
            except redis.RedisError as exc:
                if not failing:  # once per outage, not every poll
                    logger.warning("buffer.dispatch_failed", extra={"error_type": type(exc).__name__})
                failing = True
                self._stop.wait(1.0)
            except Exception:
                logger.exception("buffer.dispatch_crashed")
                self._stop.wait(1.0)
            self._stop.wait(interval)


def turn_lock(conversation_id: uuid.UUID) -> Lock:
    """The lock held while one turn of this conversation is processed, expiring if its holder dies."""
    return redis_client.lock(f"lock:turn:{conversation_id}", timeout=settings.turn_lock_seconds, blocking=False)
