"""The periodic safety net: every interval, in one process at a time, run the tasks it was given (the
bootstrap's list: re-drive lost turns and sends, handover reminders, health checks and alerts)."""

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

import redis
from redis.lock import Lock

from app.redis_client import redis_client

logger = logging.getLogger(__name__)

Task = tuple[str, Callable[[], object]]  # (name for the logs, the work)


def tick(tasks: Sequence[Task]) -> None:
    """One pass of every task; each failure is logged and the others still run."""
    for name, fn in tasks:
        try:
            fn()
        except Exception as exc:
            logger.error("maintenance.task_failed", extra={"task": name, "error_type": type(exc).__name__, "error": str(exc)[:300]})


class Maintenance:
    """Runs tick(tasks) every interval in a daemon thread; with several processes only one ticks at a time."""

    def __init__(self, interval_seconds: float, tasks: Sequence[Task]) -> None:
        self.interval = interval_seconds
        self.tasks = tuple(tasks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            lock: Lock | None
            try:
                lock = redis_client.lock("lock:maintenance", timeout=max(30, int(self.interval * 4)), blocking=False)
                if not lock.acquire():
                    continue
            except redis.RedisError:
                lock = None  # without Redis nothing can be queued, but the other tasks (alerts) still run
            try:
                tick(self.tasks)
            finally:
                if lock is not None:
                    with contextlib.suppress(redis.RedisError):
                        lock.release()
