"""CPU slots: at most WORKER_CPU_SLOTS jobs run Python at once; a job waiting on the outside holds none.
(That a turn's model call gives its slot up is shown at the defaults by test_turns_in_flight: 64 calls at once.)"""

import threading

from app import slots


def _jobs(count: int, *, waiting: bool) -> tuple[list[threading.Thread], threading.Event, threading.Semaphore]:
    """`count` jobs in their slots, each blocked (inside `slots.waiting()` if `waiting`) until released."""
    release, entered = threading.Event(), threading.Semaphore(0)

    def job() -> None:
        with slots.held():
            if waiting:
                with slots.waiting():
                    entered.release()
                    release.wait(10)
            else:
                entered.release()
                release.wait(10)

    threads = [threading.Thread(target=job, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, release, entered


def _runs_now() -> bool:
    """Whether a new job gets a slot within a second."""
    got = threading.Event()

    def job() -> None:
        with slots.held():
            got.set()

    threading.Thread(target=job, daemon=True).start()
    return got.wait(1.0)


def test_jobs_beyond_the_slots_wait_for_one():
    threads, release, entered = _jobs(slots.count(), waiting=False)
    try:
        for _ in threads:
            assert entered.acquire(timeout=5)
        assert not _runs_now()  # every slot runs Python: the next job waits
    finally:
        release.set()
    for thread in threads:
        thread.join(5)
    assert _runs_now()


def test_jobs_waiting_on_the_outside_hold_no_slot():
    threads, release, entered = _jobs(3 * slots.count(), waiting=True)  # more than the slots, all in at once
    try:
        for _ in threads:
            assert entered.acquire(timeout=5)
        assert _runs_now()
    finally:
        release.set()
    for thread in threads:
        thread.join(5)


def test_a_thread_that_is_not_a_job_waits_for_nothing():
    with slots.waiting():  # e.g. a test, the CLI or the API calling a gateway: no slot to give up
        pass
    with slots.held(), slots.held():  # a job inside a job keeps its one slot
        with slots.waiting():
            assert _runs_now()
