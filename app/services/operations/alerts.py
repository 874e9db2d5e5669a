"""Alerts to the operator's Telegram chat (ALERT_CHAT_ID, with TELEGRAM_BOT_TOKEN): failed health checks, an
error burst, slow answers, undelivered replies. Each kind is rate-limited and announces its recovery.
An alert that cannot be delivered is logged, never raised: alerting must not take the service down."""

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.config import settings
from app.schemas.health import HEALTHY
from app.schemas.outbox import OutboxPayload
from app.services.channels import telegram
from app.services.channels.outbox import Delivery
from app.services.channels.telegram import Bot
from app.utils.logging import scrub

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 300
ERRORS_THRESHOLD = 5
SLOW_AVERAGE_SECONDS = 10.0
REPEAT_AFTER_SECONDS = 15 * 60

_sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")


@dataclass
class _State:
    """Per-process memory of what is firing, so an alert repeats at most every REPEAT_AFTER_SECONDS."""

    firing: dict[str, float] = field(default_factory=dict)  # kind -> when last sent
    errors: deque[float] = field(default_factory=deque)
    responses: deque[tuple[float, float]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()
sent: deque[str] = deque(maxlen=100)  # the latest alert texts of this process, newest last


def configured() -> bool:
    return settings.alert_chat_id is not None and settings.telegram_bot_token is not None


def fire(kind: str, text: str) -> bool:
    """Raise an alert of this kind unless it was sent within the last REPEAT_AFTER_SECONDS. True if sent."""
    now = time.monotonic()
    with _state.lock:
        last = _state.firing.get(kind)
        if last is not None and now - last < REPEAT_AFTER_SECONDS:
            return False
        _state.firing[kind] = now
    logger.warning("alert.fired", extra={"kind": kind, "text": text[:300]})
    _send(f"🔴 {text}")
    return True


def clear(kind: str, text: str) -> bool:
    """Announce that a firing alert recovered. True if it was firing."""
    with _state.lock:
        if _state.firing.pop(kind, None) is None:
            return False
    logger.info("alert.cleared", extra={"kind": kind})
    _send(f"✅ {text}")
    return True


def record_error() -> None:
    now = time.monotonic()
    with _state.lock:
        _state.errors.append(now)
        _trim(now)


def record_response(seconds: float) -> None:
    now = time.monotonic()
    with _state.lock:
        _state.responses.append((now, seconds))
        _trim(now)


def _trim(now: float) -> None:
    while _state.errors and now - _state.errors[0] > WINDOW_SECONDS:
        _state.errors.popleft()
    while _state.responses and now - _state.responses[0][0] > WINDOW_SECONDS:
        _state.responses.popleft()


def evaluate(health: Mapping[str, object] | None = None) -> None:
    """Check every alert condition once; called by the maintenance loop and by /health."""
    if health is not None:
        failed = {k: v for k, v in health.items() if k in ("db", "redis", "qdrant") and v not in HEALTHY}
        if failed:
            fire("health", "Health check failed: " + ", ".join(f"{k}={v}" for k, v in failed.items()))
        else:
            clear("health", "Health check OK again")
    now = time.monotonic()
    with _state.lock:
        _trim(now)
        errors = len(_state.errors)
        times = [s for _, s in _state.responses]
    if errors >= ERRORS_THRESHOLD:
        fire("errors", f"{errors} errors in the last {WINDOW_SECONDS // 60} minutes")
    else:
        clear("errors", "Error rate back to normal")
    average = sum(times) / len(times) if times else 0.0
    if average > SLOW_AVERAGE_SECONDS:
        fire("slow", f"Average response time {average:.1f} s over the last {WINDOW_SECONDS // 60} minutes ({len(times)} answers)")
    else:
        clear("slow", "Response time back to normal")


def delivery_failed(delivery: Delivery[OutboxPayload], error: str) -> None:
    """The outbox gave up on a message: always worth a look, rate-limited per client and channel."""
    client, channel = delivery.client.slug, delivery.channel
    fire(f"delivery:{client}:{channel}", f"Could not deliver a {channel} message for client '{client}': {scrub(error)[:200]}")


def delivery_uncertain(delivery: Delivery[OutboxPayload], error: str) -> bool:
    """A message to a customer may or may not have arrived, and no manager could be told: the operator checks."""
    client, channel = delivery.client.slug, delivery.channel
    fire(
        f"uncertain:{delivery.id}",
        f"A {channel} message for client '{client}' may not have arrived (the gateway did not answer; not sent again): "
        f"outbox item {delivery.id}, conversation {delivery.conversation_id}. {scrub(error)[:200]}",
    )
    return True


def reset() -> None:
    with _state.lock:
        _state.firing.clear()
        _state.errors.clear()
        _state.responses.clear()
    sent.clear()


def _send(text: str) -> None:
    sent.append(text)
    if not configured():
        logger.info("alert.not_configured", extra={"text": text[:300]})
        return
    _sender.submit(_deliver, text)


def _deliver(text: str) -> None:
    try:
        assert settings.telegram_bot_token is not None and settings.alert_chat_id is not None
        bot = Bot(settings.telegram_bot_token.get_secret_value())
        telegram.send_message(bot, chat_id=settings.alert_chat_id, text=telegram.escape(text))
    except Exception as exc:
        logger.error("alert.delivery_failed", extra={"service": "telegram", "error_type": type(exc).__name__})


class ErrorCounter(logging.Handler):
    """Counts error-level log records for the 'errors in 5 minutes' alert."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(__name__):
            record_error()


def install_error_counter() -> None:
    """Count this process's error logs (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(handler, ErrorCounter) for handler in root.handlers):
        root.addHandler(ErrorCounter())
