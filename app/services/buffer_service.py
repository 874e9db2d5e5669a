"""Debounce of a customer's rapid messages into one turn, and the per-conversation turn lock.

The turn state lives in Redis so every process agrees on it: a hash per conversation holding when the
turn started (`first`), when it is due (`due`) and the eta of the job already scheduled (`eta`). Each new
message moves `due`; a job is enqueued only when none is scheduled early enough. A job that fires early
puts itself back for the new due time. PostgreSQL stays the source of truth for which messages still
need an answer, so losing this state only delays a turn until the maintenance sweep re-drives it.
"""

import logging
import time
import uuid
from dataclasses import dataclass

import redis
from redis.lock import Lock

from app import queue
from app.config import settings
from app.redis_client import redis_client
from app.services import turn_policy

logger = logging.getLogger(__name__)

PROCESS_TURN = "process_turn"
_STATE_TTL_SECONDS = 3600

# KEYS[1] turn hash. ARGV: now_ms, wait_ms, max_wait_ms, ttl_s. Returns {due_ms, schedule(0|1)}.
_TOUCH = redis_client.register_script(
    """
    local now = tonumber(ARGV[1])
    local first = tonumber(redis.call('HGET', KEYS[1], 'first') or ARGV[1])
    local due = math.min(now + tonumber(ARGV[2]), first + tonumber(ARGV[3]))
    local eta = tonumber(redis.call('HGET', KEYS[1], 'eta') or '-1')
    redis.call('HSET', KEYS[1], 'first', first, 'due', due)
    local schedule = 0
    if eta < 0 or due < eta then
        redis.call('HSET', KEYS[1], 'eta', due)
        schedule = 1
    end
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    return {due, schedule}
    """
)

# KEYS[1] turn hash. ARGV: now_ms. Returns 0 when the turn is due (state cleared), -1 when there is no
# state, or the due time in ms when the turn must wait longer (eta moved to it).
_CLAIM = redis_client.register_script(
    """
    local due = redis.call('HGET', KEYS[1], 'due')
    if not due then return -1 end
    if tonumber(due) > tonumber(ARGV[1]) then
        redis.call('HSET', KEYS[1], 'eta', due)
        return tonumber(due)
    end
    redis.call('DEL', KEYS[1])
    return 0
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
    """Note a new message of the conversation and make sure its turn is scheduled. False if Redis failed."""
    try:
        due_ms, schedule = _TOUCH(
            keys=[_key(conversation_id)],
            args=[_now_ms(), int(wait_seconds * 1000), int(max(max_wait_seconds, wait_seconds) * 1000), _STATE_TTL_SECONDS],
        )
        if schedule:
            queue.enqueue(PROCESS_TURN, str(conversation_id), delay_seconds=max(0.0, (int(due_ms) - _now_ms()) / 1000))
        return True
    except redis.RedisError as exc:
        # The message is safe in PostgreSQL; the maintenance sweep schedules its turn once Redis is back.
        logger.warning("buffer.schedule_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
        return False


def claim_due(conversation_id: uuid.UUID) -> float:
    """0 when the turn should run now; otherwise the seconds to wait (the job re-enqueues itself)."""
    try:
        result = int(_CLAIM(keys=[_key(conversation_id)], args=[_now_ms()]))
    except redis.RedisError as exc:
        logger.warning("buffer.claim_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
        return 0.0
    if result <= 0:
        return 0.0
    return max(0.0, (result - _now_ms()) / 1000)


def enqueue_turn(conversation_id: uuid.UUID, *, delay_seconds: float = 0.0) -> None:
    """Schedule a job for the conversation's turn; raises redis errors."""
    queue.enqueue(PROCESS_TURN, str(conversation_id), delay_seconds=delay_seconds)


def turn_lock(conversation_id: uuid.UUID) -> Lock:
    """The lock held while one turn of this conversation is processed, expiring if its holder dies."""
    return redis_client.lock(f"lock:turn:{conversation_id}", timeout=settings.turn_lock_seconds, blocking=False)
