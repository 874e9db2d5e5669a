"""The periodic work (the bootstrap's lists: re-drive abandoned turns and sends, handover reminders, health
checks and alerts, retention). Every worker process runs it, as a peer: ticks fall on the wall clock (every
interval since the epoch), and each task runs once per tick across all processes, by whichever process
first takes the task's key for that tick in Redis (SET NX)."""

import logging
import threading
import time
from collections.abc import Callable, Sequence

import dramatiq
import redis

from app import leases
from app.redis_client import redis_client

logger = logging.getLogger(__name__)

Task = tuple[str, Callable[[], object]]  # (name for the logs and the keys, the work)


def tick(tasks: Sequence[Task]) -> None:
    """One pass of every task in this process; each failure is logged and the others still run."""
    for name, fn in tasks:
        _run(name, fn)


def _run(name: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:
        logger.error("maintenance.task_failed", extra={"task": name, "error_type": type(exc).__name__, "error": str(exc)[:300]})


def run_once_per_tick(tasks: Sequence[Task], interval: float, tick_number: int) -> list[str]:
    """Run each task whose key for this tick this process takes first; the names it ran.

    No lock is held while a task runs: one held by a process that was killed would stop the task everywhere
    until it expired (the re-drive must not wait on a dead process). The tasks are safe to overlap."""
    ran = []
    for name, fn in tasks:
        try:
            if not redis_client.set(f"tick:{name}:{tick_number}", leases.owner(), nx=True, ex=max(2, int(interval * 3))):
                continue  # another process has this tick
        except redis.RedisError:
            pass  # without Redis nothing can be queued, but the other tasks (alerts) still run, in each process
        _run(name, fn)
        ran.append(name)
    return ran


class Maintenance:
    """Runs its tasks every interval, on the wall clock's ticks, in a daemon thread (see the module's doc)."""

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
        while not self._stop.wait(self.interval - time.time() % self.interval):
            run_once_per_tick(self.tasks, self.interval, int(time.time() // self.interval))


class PeriodicWork(dramatiq.Middleware):
    """Starts the periodic work in each worker process (in-process or `dramatiq app.worker`), each group of
    tasks on its own interval, and stops it with the worker."""

    def __init__(self, groups: Callable[[], Sequence[tuple[float, Sequence[Task]]]]) -> None:
        self._groups = groups
        self._running: list[Maintenance] = []

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._running = [Maintenance(interval, tasks) for interval, tasks in self._groups()]
        for maintenance in self._running:
            maintenance.start()
        every = {name: maintenance.interval for maintenance in self._running for name, _ in maintenance.tasks}
        logger.info("worker.started", extra={"owner": leases.owner(), "threads": len(worker.workers), "periodic_seconds": every})

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for maintenance in self._running:
            maintenance.stop()
        self._running = []
