"""Job-queue actors. Runs inside the API process by default; `dramatiq app.worker` runs more workers."""

import uuid

import dramatiq

from app.config import settings
from app.queue import QUEUE, broker
from app.services.channels import outbox
from app.services.conversation import (
    scheduling,
    turn,
)
from app.services.handover import manager_actions  # noqa: F401

# manager_actions registers the outbox handler for managers' replies.
from app.services.operations import alerts
from app.utils.logging import setup_logging

setup_logging(settings.log_level, settings.log_format)
alerts.install_error_counter()

__all__ = ["broker", "deliver_outbox", "process_turn"]

# Every worker process dispatches the turns that are due (the webhook only records when they are).
broker.add_middleware(scheduling.Dispatcher(prefetch=turn.prefetch_turn))


@dramatiq.actor(actor_name="process_turn", queue_name=QUEUE, max_retries=5, min_backoff=1_000, max_backoff=30_000, time_limit=300_000)
def process_turn(conversation_id: str) -> None:
    turn.process_turn(uuid.UUID(conversation_id))


@dramatiq.actor(actor_name="deliver_outbox", queue_name=QUEUE, max_retries=3, min_backoff=1_000, max_backoff=30_000, time_limit=120_000)
def deliver_outbox(item_id: str) -> None:
    outbox.deliver(uuid.UUID(item_id))
