"""Debounce of a customer's rapid messages into one turn, its dispatch, and the per-conversation turn lock.

The turn state lives in Redis so every process agrees on it: a hash per conversation holding when the
turn started (`first`) and when it is due (`due`), and one sorted set of conversations by due time. The
webhook moves `due` and the set's score in one script (one round trip, no job enqueued on the request
path). A dispatcher thread in every worker process pops the conversations that are due and puts their
turn jobs on the queue. PostgreSQL stays the source of truth for which messages still need an answer, so
losing this state only delays a turn until the periodic re-drive schedules it.

While any API process has more webhook deliveries in flight than request threads, turns hold (the customer's
next message may be among them): each process marks itself in a Redis sorted set while it is so busy.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis

from app import leases, queue, slots
from app.config import settings
from app.redis_client import redis_client
from app.schemas.chatflow import ChatFlowWebhook
from app.services.clients import ClientInfo
from app.services.conversation import end_of_turn

logger = logging.getLogger(__name__)

DUE_KEY = queue.TURNS_DUE_KEY
PREFETCH_KEY = "turns:prefetch"
_PREFETCH_MIN_WAIT_SECONDS = 0.5  # shorter waits leave no time to prepare anything
_PREFETCH_BACKLOG = 4  # prefetches waiting beyond this are dropped: late ones help no one
_PREFETCH_MAX_WEBHOOKS_IN_FLIGHT = 4  # more deliveries than this in flight in the process: no prefetch
_STATE_TTL_SECONDS = 3600
_DISPATCH_BATCH = 200
_CLAIM_MARGIN_MS = 250
_LAG_MEMORY_MS = 5000  # a client's delivery lag counts until a message arrives on time, or this long

# KEYS[1] turn hash, KEYS[2] due set, KEYS[3] prefetch set, KEYS[4] the client's delivery lag, optionally
# KEYS[5] the delivery's de-duplication key. ARGV: now_ms, wait_ms, max_wait_ms, ttl_s, conversation id,
# prefetch_ms (-1: none), lag_ms, lag memory ms; with KEYS[5] also its ttl_s, the shortest wait any message
# may set (ms) and the configured cap (ms). Returns due_ms; with KEYS[5], -1 when the key existed (a delivery
# seen before: nothing is moved), else the soonest this turn may fall due, by this message or any later one.
# The hash keeps what a claim needs to re-judge the turn: the last message's time, its wait, the cap, and
# the name of the client's lag key.
_TOUCH = redis_client.register_script(
    """
    if KEYS[5] and not redis.call('SET', KEYS[5], 1, 'NX', 'EX', ARGV[9]) then return -1 end
    local now = tonumber(ARGV[1])
    local lag = tonumber(ARGV[7])
    local first = tonumber(redis.call('HGET', KEYS[1], 'first') or ARGV[1])
    local cap = first + tonumber(ARGV[3])
    local due = math.min(now + tonumber(ARGV[2]) + lag, cap)
    redis.call('HSET', KEYS[1], 'first', first, 'due', due, 'last', now, 'wait', ARGV[2], 'cap', cap, 'lagkey', KEYS[4])
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('ZADD', KEYS[2], due, ARGV[5])
    if tonumber(ARGV[6]) >= 0 then
        redis.call('ZADD', KEYS[3], math.min(now + tonumber(ARGV[6]), due), ARGV[5])
    end
    if lag > 0 then
        redis.call('SET', KEYS[4], lag, 'PX', ARGV[8])
    else
        redis.call('DEL', KEYS[4])
    end
    if KEYS[5] then return math.min(due, now + tonumber(ARGV[10]), first + tonumber(ARGV[11])) end
    return due
    """
)

# KEYS[1] turn hash, KEYS[2] due set. ARGV: now_ms, conversation id, lead_ms. Returns 0 when the turn is
# due (state cleared), -1 when there is no state, or the due time in ms when it must wait longer: back in
# the set, unless it is due within lead_ms (the caller waits that little itself and claims again).
# While the client's deliveries are running late, the rest of this customer's burst is still on its way:
# the turn waits for its last message's wait plus the current lag (plus a second for the timestamps'
# resolution), within its cap. (The lag key is read by the name the touch stored: one Redis, no cluster.)
_CLAIM = redis_client.register_script(
    """
    local state = redis.call('HMGET', KEYS[1], 'due', 'last', 'wait', 'cap', 'lagkey')
    if not state[1] then return -1 end
    local due = tonumber(state[1])
    if state[5] then
        local lag = tonumber(redis.call('GET', state[5]) or '0')
        if lag > 0 then
            due = math.max(due, math.min(tonumber(state[2]) + tonumber(state[3]) + lag + 1000, tonumber(state[4])))
            redis.call('HSET', KEYS[1], 'due', due)
        end
    end
    if due > tonumber(ARGV[1]) then
        if due > tonumber(ARGV[1]) + tonumber(ARGV[3]) then
            redis.call('ZADD', KEYS[2], due, ARGV[2])
        end
        return due
    end
    redis.call('DEL', KEYS[1])
    return 0
    """
)

# KEYS: sorted sets of conversation ids by time. ARGV: batch, then one time limit (ms) per key. Pops and
# returns, per key, the conversations up to its limit and then the earliest time still waiting in it
# ('' if none): one round trip for every set the dispatcher watches, and it knows how long it may sleep.
_POP_DUE = redis_client.register_script(
    """
    local result = {}
    for i, key in ipairs(KEYS) do
        local ids = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[i + 1], 'LIMIT', 0, tonumber(ARGV[1]))
        if #ids > 0 then redis.call('ZREM', key, unpack(ids)) end
        local next = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        result[2 * i - 1] = ids
        result[2 * i] = next[2] or ''
    end
    return result
    """
)


def _key(conversation_id: uuid.UUID) -> str:
    return f"turn:{conversation_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a call per field, on the webhook's path
class TurnMove:
    """What one new customer message does to its conversation's turn: the wait it sets (end-of-turn policy),
    the turn's cap, and how late the message reached us. Computed once per delivery (see turn_move)."""

    client_id: uuid.UUID
    wait_seconds: float
    max_wait_seconds: float
    lag_seconds: float
    shortest_wait_seconds: float  # the shortest wait any later message of the turn may set

    def apply(self, conversation_id: uuid.UUID) -> bool:
        """Note the message and move its turn's due time. False if Redis failed.

        While the client's deliveries lag every turn of the client is re-judged when claimed (see _CLAIM)."""
        try:
            self._touch(conversation_id)
            return True
        except redis.RedisError as exc:
            # The message is safe in PostgreSQL; the maintenance sweep schedules its turn once Redis is back.
            logger.warning("buffer.schedule_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
            return False

    def first_delivery(self, conversation_id: uuid.UUID, *, dedup_key: str, dedup_ttl_seconds: int) -> int | None:
        """De-duplicate the delivery and move the turn in one round trip, before the message is stored (the
        webhook knows a returning customer's conversation). None when the delivery was seen before (nothing
        moved); else the soonest the turn may fall due (epoch ms): this message's due time, or earlier if a
        later message with the shortest wait or the turn's cap comes first. Raises redis.RedisError."""
        soonest = self._touch(conversation_id, dedup=(dedup_key, dedup_ttl_seconds))
        return None if soonest < 0 else soonest

    def settle(self, conversation_id: uuid.UUID, *, moved_due_ms: int | None) -> bool:
        """After the message is stored: the move made before the store (`first_delivery`, due no sooner than
        `moved_due_ms`) stands while the turn is surely not claimed yet; otherwise the turn is moved now.
        False if Redis failed."""
        if moved_due_ms is not None and _still_ahead(moved_due_ms):
            return True
        return self.apply(conversation_id)

    def _touch(self, conversation_id: uuid.UUID, dedup: tuple[str, int] | None = None) -> int:
        waits = self.wait_seconds + self.lag_seconds
        return _Touch(
            conversation_id=conversation_id,
            client_id=self.client_id,
            now_ms=_now_ms(),
            wait_ms=int(self.wait_seconds * 1000),
            max_wait_ms=int(max(self.max_wait_seconds, waits) * 1000),
            prefetch_ms=_prefetch_ms(waits),
            lag_ms=int(self.lag_seconds * 1000),
            dedup_key=dedup[0] if dedup else None,
            dedup_ttl_seconds=dedup[1] if dedup else 0,
            shortest_wait_ms=int(self.shortest_wait_seconds * 1000),
            configured_cap_ms=int(self.max_wait_seconds * 1000),
        ).run()


def turn_move(client: ClientInfo, payload: ChatFlowWebhook) -> TurnMove:
    """How this delivery moves its turn: the client's waits (else the global ones), the end-of-turn policy's
    wait for this message, and its delivery lag."""
    wait_seconds = client.settings.buffer_wait_seconds
    if wait_seconds is None:
        wait_seconds = settings.buffer_wait_seconds
    max_wait_seconds = client.settings.buffer_max_wait_seconds
    if max_wait_seconds is None:
        max_wait_seconds = settings.buffer_max_wait_seconds
    return TurnMove(
        client_id=client.id,
        wait_seconds=end_of_turn.wait_seconds(message_type=payload.message_type, text=payload.text, base_wait=wait_seconds),
        max_wait_seconds=max_wait_seconds,
        lag_seconds=delivery_lag(payload.metadata.timestamp),
        shortest_wait_seconds=end_of_turn.SHORT_FACTOR * max(0.0, wait_seconds),
    )


def delivery_lag(sent_at: int | None) -> float:
    """How late a message reached us, from its WhatsApp timestamp (whole seconds, or milliseconds).

    The customer's pause is measured on the customer's clock: when deliveries run late (the gateway
    retrying, this service overloaded), the rest of a burst is late by as much, so the turn waits that
    much longer for it. A second is allowed for the timestamp's resolution; a timestamp in the future
    or missing counts as no lag, and the extra wait is capped by MAX_DELIVERY_LAG_SECONDS."""
    if not sent_at or sent_at <= 0:
        return 0.0
    seconds = sent_at / 1000 if sent_at > 100_000_000_000 else float(sent_at)
    lag = time.time() - seconds - 1.0
    return round(min(max(lag, 0.0), settings.max_delivery_lag_seconds), 3)


def _still_ahead(due_ms: int) -> bool:
    """Whether a turn that cannot fall due before `due_ms` is surely not claimed yet: a message stored
    now is part of it. A turn is claimed no earlier than its due time (the lag rules only postpone it);
    the margin covers the claim's own round trips and a small clock difference between hosts."""
    return due_ms - _now_ms() > _CLAIM_MARGIN_MS


@dataclass(slots=True)  # not frozen, like TurnMove
class _Touch:
    """One run of _TOUCH, its arguments by name (the script takes them by position, see its comment)."""

    conversation_id: uuid.UUID
    client_id: uuid.UUID
    now_ms: int
    wait_ms: int
    max_wait_ms: int  # the turn's cap, extended to hold this message's own wait and lag
    prefetch_ms: int  # -1: no prefetch
    lag_ms: int
    dedup_key: str | None = None  # with a key: de-duplicate the delivery first, and return the soonest due time
    dedup_ttl_seconds: int = 0
    shortest_wait_ms: int = 0
    configured_cap_ms: int = 0

    def run(self) -> int:
        keys = [_key(self.conversation_id), DUE_KEY, PREFETCH_KEY, f"lag:{self.client_id}"]
        args: list[str | int] = [
            self.now_ms,
            self.wait_ms,
            self.max_wait_ms,
            _STATE_TTL_SECONDS,
            str(self.conversation_id),
            self.prefetch_ms,
            self.lag_ms,
            _LAG_MEMORY_MS,
        ]
        if self.dedup_key is not None:
            keys.append(self.dedup_key)
            args += [self.dedup_ttl_seconds, self.shortest_wait_ms, self.configured_cap_ms]
        return int(_TOUCH(keys=keys, args=args))


def _prefetch_ms(wait_seconds: float) -> int:
    """When to prepare the turn: once the customer has paused a little, well before the turn is due."""
    if settings.prefetch_pause_ms <= 0 or wait_seconds < _PREFETCH_MIN_WAIT_SECONDS:
        return -1
    return min(settings.prefetch_pause_ms, int(wait_seconds * 500))


def claim_due(conversation_id: uuid.UUID) -> float:
    """0 when the turn should run now; otherwise the seconds until it is due (it stays scheduled).

    A turn dispatched early (see _lead_ms) is waited for here, so the queue's pick-up time overlaps
    the end of the customer's pause instead of adding to it."""
    _wait_for_deliveries()
    for attempt in range(3):
        lead = _lead_ms() if attempt < 2 else 0  # the last try puts a turn that is still early back in the set
        try:
            result = int(_CLAIM(keys=[_key(conversation_id), DUE_KEY], args=[_now_ms(), str(conversation_id), lead]))
        except redis.RedisError as exc:
            logger.warning("buffer.claim_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
            return 0.0
        if result <= 0:
            return 0.0
        wait_ms = result - _now_ms()
        if wait_ms > lead:
            return wait_ms / 1000
        with slots.waiting():
            time.sleep(max(wait_ms, 0) / 1000 + 0.002)
    return 0.0


QUEUEING_KEY = "webhooks:queueing"  # API processes with more deliveries in flight than request threads, by when last seen so
_QUEUEING_FRESH_MS = 3000  # a process that stopped saying so (killed) no longer holds anyone's turns
_QUEUEING_REFRESH_SECONDS = 1.0


class _Deliveries:
    """Webhook requests this process has received and not yet answered (app.middleware counts them). More
    than it has request threads means deliveries are queueing: it says so in Redis (QUEUEING_KEY), from a
    thread of its own so the request path never waits on Redis; nothing is written while it keeps up."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._lock = threading.Lock()  # one event loop per process normally; tests may run two
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish, name="webhook-backlog", daemon=True)
                self._thread.start()
        if self.in_flight > settings.http_threads:
            self._changed.set()

    def _publish(self) -> None:
        marked = False
        while True:
            self._changed.wait(_QUEUEING_REFRESH_SECONDS if marked else None)
            self._changed.clear()
            queueing = self.in_flight > settings.http_threads
            try:
                if queueing:
                    redis_client.zadd(QUEUEING_KEY, {leases.owner(): _now_ms()})
                elif marked:
                    redis_client.zrem(QUEUEING_KEY, leases.owner())
                marked = queueing
            except redis.RedisError as exc:
                logger.warning("buffer.backlog_not_shared", extra={"error_type": type(exc).__name__})
            time.sleep(0.1)  # at most ten writes a second


deliveries = _Deliveries()


def count_webhook(delta: int) -> None:
    deliveries.count(delta)


def deliveries_queueing() -> bool:
    """Whether any API process has more deliveries in flight than request threads (said within 3 s)."""
    try:
        return int(redis_client.zcount(QUEUEING_KEY, _now_ms() - _QUEUEING_FRESH_MS, "+inf")) > 0
    except redis.RedisError:
        return False


def _wait_for_deliveries() -> None:
    """Hold a turn while deliveries queue in any API process (a burst beyond what it acknowledges per
    second): the customer's next message may be among them, and acknowledging them first keeps the gateway
    from timing out. Bounded by BUFFER_MAX_WAIT_SECONDS."""
    deadline = time.monotonic() + settings.buffer_max_wait_seconds
    while deliveries_queueing() and time.monotonic() < deadline:
        with slots.waiting():
            time.sleep(0.1)


def _lead_ms() -> int:
    """How early a due turn is put on the queue: about what a worker takes to pick a job up."""
    return 2 * settings.worker_poll_ms


def enqueue_turn(conversation_id: uuid.UUID, *, delay_seconds: float = 0.0) -> None:
    """Have the conversation's turn dispatched in `delay_seconds` (or sooner if it is already due sooner).

    Raises redis errors."""
    redis_client.zadd(DUE_KEY, {str(conversation_id): _now_ms() + int(delay_seconds * 1000)}, lt=True)


@dataclass(frozen=True)
class Dispatched:
    turns: int
    next_due_ms: int | None  # when the earliest turn or prefetch still waiting is to be popped


def _pop_due(leads: dict[str, int]) -> tuple[list[list[str]], int | None]:
    """Pop each set's members due within its lead; also when the dispatcher must look again."""
    now = _now_ms()
    popped: list[Any] = _POP_DUE(keys=list(leads), args=[_DISPATCH_BATCH, *(now + lead for lead in leads.values())])
    groups, wake = [], None
    for index, lead in enumerate(leads.values()):
        groups.append([raw.decode() if isinstance(raw, bytes) else str(raw) for raw in popped[2 * index]])
        earliest = popped[2 * index + 1]
        if earliest not in (b"", "", None):
            at = int(float(earliest)) - lead
            wake = at if wake is None else min(wake, at)
    return groups, wake


def dispatch_due(*, prefetch: Callable[[list[str]], None] | None = None) -> Dispatched:
    """Put the turn jobs of every conversation that is due on the queue (a little early, see claim_due).

    Also pops the conversations whose customer has paused and hands them to `prefetch` (if any)."""
    (ids, paused), next_due = _pop_due({DUE_KEY: _lead_ms(), PREFETCH_KEY: 0})
    if prefetch is not None:
        prefetch(paused)
    for conversation_id in ids:
        try:
            queue.enqueue(queue.Job.PROCESS_TURN, conversation_id)
        except redis.RedisError:
            # Popped but not queued: back in the set for the next pass (or the maintenance sweep).
            redis_client.zadd(DUE_KEY, {conversation_id: _now_ms()}, lt=True)
            raise
    return Dispatched(len(ids), next_due)


class Dispatcher(dramatiq.Middleware):
    """Runs dispatch_due() every DISPATCH_POLL_MS in each worker process (in-process or `dramatiq app.worker`).

    It also hands conversations whose customer has paused to `prefetch` (one at a time, on a thread of
    its own), so a turn's slow preparation (embedding its query) is done while the turn still waits.
    """

    def __init__(self, prefetch: Callable[[uuid.UUID], None] | None = None) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefetch = prefetch
        self._prefetcher: ThreadPoolExecutor | None = None
        self._prefetching = threading.BoundedSemaphore(_PREFETCH_BACKLOG)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        if self._prefetch is not None:
            self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-prefetch")
        self._thread = threading.Thread(target=self._run, name="turn-dispatcher", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=False, cancel_futures=True)

    def _prefetch_paused(self, conversation_ids: list[str]) -> None:
        if self._prefetcher is None or deliveries.in_flight > _PREFETCH_MAX_WEBHOOKS_IN_FLIGHT:
            return  # busy acknowledging: embedding ahead would take the CPU from the acknowledgements (the turn embeds)
        for conversation_id in conversation_ids:
            if not self._prefetching.acquire(blocking=False):
                continue  # the prefetcher is behind (a burst): this turn prepares itself
            self._prefetcher.submit(self._run_prefetch, uuid.UUID(conversation_id))

    def _run_prefetch(self, conversation_id: uuid.UUID) -> None:
        try:
            assert self._prefetch is not None
            with slots.held():  # work like a turn's: it takes its turn at the interpreter like one
                self._prefetch(conversation_id)
        except Exception as exc:  # an optimisation only: the turn does the work itself
            logger.info("buffer.prefetch_failed", extra={"conversation_id": str(conversation_id), "error_type": type(exc).__name__})
        finally:
            self._prefetching.release()

    def _run(self) -> None:
        # Sleep until the earliest waiting time, or at most one poll interval: a turn scheduled meanwhile
        # (by any process) is due no sooner than its wait, which is longer than the interval. At least a
        # quarter of the lead: turns are popped a lead early, so in a burst (a turn due every few ms) one pass
        # takes those of the next 50 ms instead of one pass (a Redis script) per turn, and none is late.
        interval = settings.dispatch_poll_ms / 1000
        least = _lead_ms() / 4000
        failing = False
        while not self._stop.is_set():
            try:
                prefetch = self._prefetch_paused if self._prefetcher is not None else None
                dispatched = dispatch_due(prefetch=prefetch)
                if dispatched.turns >= _DISPATCH_BATCH:
                    continue  # more are due: no pause
                failing = False
                if dispatched.next_due_ms is not None:
                    self._stop.wait(min(interval, max(least, (dispatched.next_due_ms - _now_ms()) / 1000)))
                    continue
            except redis.RedisError as exc:
                if not failing:  # once per outage, not every poll
                    logger.warning("buffer.dispatch_failed", extra={"error_type": type(exc).__name__})
                failing = True
                self._stop.wait(1.0)
            except Exception:
                logger.exception("buffer.dispatch_crashed")
                self._stop.wait(1.0)
            self._stop.wait(interval)
