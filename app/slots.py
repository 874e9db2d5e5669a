"""CPU slots: how many of a process's jobs run Python at once, while any number of them wait on the outside.

A worker keeps WORKER_THREADS (64) turns in flight, each mostly waiting on the model. What they do between
the waits (SQL, building prompts, parsing answers) is Python under the process's one GIL: when dozens of
threads want it at once, every short wait (a query, a Redis call) hands the GIL to another thread and back,
and the handing over costs more CPU than the work (measured: 11.6 ms of CPU per turn alone, 16.5 ms among 64
threads; with two slots 14.2 ms, and a quarter more turns a second). So a job holds a slot (`held`) while it
runs, and gives it up (`waiting`) around every wait that is not a short round trip: a model call, a gateway
send, a transcription, a download, an embedding (C code that releases the GIL), a sleep. A slot is never
waited for while holding a database connection: jobs take their slot before any transaction, and give it up
only outside one.

WORKER_CPU_SLOTS: 0 (the default) is one per CPU the process may run on.
"""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.config import settings

_count = settings.worker_cpu_slots or len(os.sched_getaffinity(0))
_slots = threading.BoundedSemaphore(_count)
_local = threading.local()


def count() -> int:
    return _count


@contextmanager
def held() -> Iterator[None]:
    """Run a job in a slot (re-entrant: a job run inside another's slot keeps it)."""
    if getattr(_local, "holding", False):
        yield
        return
    _slots.acquire()
    try:
        _local.holding = True
        yield
    finally:
        if _local.holding:
            _local.holding = False
            _slots.release()


@contextmanager
def waiting() -> Iterator[None]:
    """Give this thread's slot (if it holds one) to another job while it waits on the outside."""
    if not getattr(_local, "holding", False):
        yield
        return
    _local.holding = False
    _slots.release()
    try:
        yield
    finally:
        _slots.acquire()
        _local.holding = True  # (held() releases it on the way out)
