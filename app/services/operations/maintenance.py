"""Periodic safety net: re-drive turns and sends whose jobs were lost (Redis outage, a killed process)."""

import contextlib
import logging
import threading
from collections.abc import Callable

import redis

from app.redis_client import redis_client
from app.services.channels import outbox
from app.services.conversation import turn
from app.services.handover import reminders
from app.services.operations import health

logger = logging.getLogger(__name__)

# Extra tasks registered by other services (handover reminders, alert checks), run on every tick.
tasks: list[tuple[str, Callable[[], object]]] = []


def tick() -> None:
    """One pass of every periodic task; each failure is logged and the others still run."""
    periodic: list[tuple[str, Callable[[], object]]] = [
        ("turns", turn.redrive_turns),
        ("outbox", outbox.redrive),
        ("handovers", reminders.check_pending),
        ("alerts", health.run_checks),
        *tasks,
    ]
    for name, fn in periodic:
        try:
            fn()
        except Exception as exc:
            logger.error("maintenance.task_failed", extra={"task": name, "error_type": type(exc).__name__, "error": str(exc)[:300]})


class Maintenance:
    """Runs tick() every interval in a daemon thread; with several processes only one ticks at a time."""

    def __init__(self, interval_seconds: float) -> None:
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                lock = redis_client.lock("lock:maintenance", timeout=max(30, int(self.interval * 4)), blocking=False)
                if not lock.acquire():
                    continue
            except redis.RedisError:
                lock = None  # without Redis nothing can be queued, but the other tasks (alerts) still run
            try:
                tick()
            finally:
                if lock is not None:
                    with contextlib.suppress(redis.RedisError):
                        lock.release()
