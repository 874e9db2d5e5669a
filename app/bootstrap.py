"""How a Truffles process is put together, in one place. Importing a module changes no global state:
everything that registers or starts is here, called by the FastAPI lifespan (app/main.py) and by the
worker entry (app/worker.py).

- wire(): the outbox's handler for each kind of item and the listeners told of an item given up on or of
  a send whose outcome is unknown, the job queue's actors, and the two Dramatiq middlewares every worker
  process runs: the turn dispatcher and the periodic work (re-drive, reminders, alerts, retention), on the
  one broker. Idempotent.
- background_work(): the in-process Dramatiq worker of the API process (WORKER_MODE=inprocess).
- worker_process(): the same wiring for `dramatiq app.worker`, whose CLI finds the broker globally. Every
  worker process is a full peer: with WORKER_MODE=off the API only acknowledges, and the workers do the rest.
- forget_process_state(): the per-process caches (tests start each case from a clean process).
"""

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from app import queue, slots
from app.config import settings
from app.db import session_scope
from app.queue import QUEUE, Job, broker
from app.schemas.outbox import BookingCard, Card, Digest, ManagerMedia, ManagerText, TopicMedia, TopicText, WhatsAppText
from app.services import clients
from app.services.booking import card as booking_card
from app.services.booking import manager as booking_manager
from app.services.channels import media_store, outbox
from app.services.conversation import inbound, scheduling, turn
from app.services.handover import bots, manager_actions, reminders, topics
from app.services.operations import alerts, digest, health, retention
from app.services.operations.maintenance import PeriodicWork, Task
from app.utils.logging import setup_logging

logger = logging.getLogger(__name__)

_wired = False
_wiring = threading.Lock()


def configure_logging() -> None:
    """Structured logs as configured, and the error counter behind the 'errors in 5 minutes' alert."""
    setup_logging(settings.log_level, settings.log_format)
    alerts.install_error_counter()


def wire() -> RedisBroker:
    """Register the outbox handlers and listeners, the actors and the dispatcher, once per process."""
    global _wired
    with _wiring:
        if not _wired:
            outbox.register(WhatsAppText, outbox.deliver_whatsapp_text)
            outbox.register(ManagerText, manager_actions.deliver_reply)
            outbox.register(ManagerMedia, manager_actions.deliver_media)
            outbox.register(TopicText, topics.deliver_text)
            outbox.register(TopicMedia, topics.deliver_media)
            outbox.register(Card, topics.deliver_card)
            outbox.register(BookingCard, booking_manager.deliver_card)
            outbox.register(Digest, digest.deliver)
            manager_actions.register_buttons(list(booking_card.BookingAction), booking_manager.press)
            manager_actions.register_topic_reader(booking_manager.proposal)
            outbox.on_gave_up(alerts.delivery_failed)
            outbox.on_gave_up(manager_actions.report_given_up)
            outbox.on_uncertain(manager_actions.report_uncertain)  # the manager in the topic, if there is one
            outbox.on_uncertain(alerts.delivery_uncertain)  # else the operator
            # Every worker process dispatches the turns that are due (the webhook only records when they are),
            # and takes its share of the periodic work (each task once per tick across processes).
            broker.add_middleware(scheduling.Dispatcher(prefetch=turn.prefetch_turn))
            broker.add_middleware(PeriodicWork(periodic_work))
            for job, fn, max_retries, time_limit_ms in (
                (Job.PROCESS_TURN, _process_turn, 5, 300_000),
                (Job.DELIVER_OUTBOX, _deliver_outbox, 3, 120_000),
            ):
                declare = dramatiq.actor(
                    actor_name=job.value,
                    queue_name=QUEUE,
                    broker=broker,
                    max_retries=max_retries,
                    min_backoff=1_000,
                    max_backoff=30_000,
                    time_limit=time_limit_ms,
                )
                declare(fn)
            _wired = True
    return broker


def _process_turn(conversation_id: str) -> None:
    with slots.held():
        turn.process_turn(uuid.UUID(conversation_id))


def _deliver_outbox(item_id: str) -> None:
    with slots.held():
        outbox.deliver(uuid.UUID(item_id))


def redrive_tasks() -> list[Task]:
    """Run every REDRIVE_INTERVAL_SECONDS: a turn or send whose worker died is taken over within seconds."""
    return [
        ("turns", turn.redrive_turns),  # turns whose lease expired (the worker died), or whose job was lost
        ("outbox", outbox.redrive),  # sends likewise (a WhatsApp send cut off mid-way is settled as uncertain)
    ]


def maintenance_tasks() -> list[Task]:
    """Run every MAINTENANCE_INTERVAL_SECONDS."""
    return [
        ("handovers", reminders.check_open),  # reminders and auto-close of pending and taken handovers
        ("media", media_store.remove_expired),  # managers' files past their expiry
        ("alerts", health.run_checks),  # health checks, and the alerts they and the error counters raise
        ("retention", retention.prune_if_due),  # personal data past its retention, hourly
        ("digest", digest.send_due),  # each client's daily digest, once per local day (a row claims it)
    ]


def periodic_work() -> list[tuple[float, list[Task]]]:
    return [(settings.redrive_interval_seconds, redrive_tasks()), (settings.maintenance_interval_seconds, maintenance_tasks())]


@contextmanager
def background_work() -> Iterator[None]:
    """The API process's in-process worker (WORKER_MODE=inprocess), with the dispatcher and the periodic
    work its middlewares start; stopped on exit."""
    wire()
    _warn_weaknesses()
    worker: dramatiq.Worker | None = None
    if settings.worker_mode == "inprocess":
        worker = queue.start_worker(broker, settings.worker_threads, settings.worker_poll_ms)
    try:
        yield
    finally:
        if worker is not None:
            worker.stop(timeout=10_000)


def _warn_weaknesses() -> None:
    """Say at start-up what the operator left open (clients carried over from before webhook secrets, say)."""
    try:
        with session_scope() as session:
            found = clients.weaknesses(session)
    except Exception as exc:  # the database may not be up yet: the service starts anyway
        logger.warning("security.check_skipped", extra={"error_type": type(exc).__name__})
        return
    if any(found.values()):
        logger.warning("security.weaknesses", extra=found)


def worker_process() -> RedisBroker:
    """For `dramatiq app.worker`: logging, wiring, and the broker set as Dramatiq's global one (its CLI looks there)."""
    configure_logging()
    wired = wire()
    dramatiq.set_broker(wired)
    return wired


def forget_process_state() -> None:
    """Forget what this process remembers between requests: client lookups, bots' webhook secrets, returning customers."""
    clients.clear_cache()
    bots.forget()
    health.forget()
    inbound.forget_conversations()
