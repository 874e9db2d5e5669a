"""Retention of personal data, run by the maintenance task: a customer's messages (text, transcripts, media
metadata, the questions the bot could not answer and managers' answers suggested from them) are deleted after
their client's `retention_days` (default 180), Telegram update ids after
TELEGRAM_UPDATES_RETENTION_DAYS and finished outbox items (sent, failed, cancelled, uncertain: they hold the texts too)
after OUTBOX_RETENTION_DAYS. In batches on indexed columns, at most once an hour across processes."""

import logging

import redis
from sqlalchemy import select, text

from app.config import settings
from app.db import session_scope
from app.models import Client, MessageStatus, OutboxStatus
from app.redis_client import redis_client
from app.schemas.client import ClientSettings

logger = logging.getLogger(__name__)

BATCH = 1000
MAX_BATCHES = 20  # per table and run: a large backlog is worked off over several runs, never in one long lock
_EVERY_SECONDS = 3600
_UNFINISHED = (MessageStatus.RECEIVED, MessageStatus.PROCESSING, MessageStatus.PENDING)
_FINISHED = (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.UNCERTAIN)


def prune_if_due() -> dict[str, int] | None:
    """prune(), unless another process (or this one) ran it within the hour."""
    try:
        if not redis_client.set("retention:ran", 1, nx=True, ex=_EVERY_SECONDS):
            return None
    except redis.RedisError:
        return None  # without Redis the next run will do; data only waits a little longer
    return prune()


def _listed(statuses: tuple[MessageStatus, ...] | tuple[OutboxStatus, ...]) -> str:
    return ", ".join(f"'{status.value}'" for status in statuses)


# Each deletes one batch; the inner SELECT walks an index (messages: client_id, created_at; outbox: the
# partial index of finished items; telegram_updates: received_at).
_MESSAGES = f"""
    DELETE FROM messages WHERE id IN (
        SELECT id FROM messages
        WHERE client_id = :client_id AND created_at < now() - make_interval(days => :days)
          AND status NOT IN ({_listed(_UNFINISHED)})
        LIMIT :batch)
"""
_TELEGRAM_UPDATES = """
    DELETE FROM telegram_updates WHERE ctid IN (
        SELECT ctid FROM telegram_updates WHERE received_at < now() - make_interval(days => :days) LIMIT :batch)
"""
_OUTBOX = f"""
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox
        WHERE status IN ({_listed(_FINISHED)}) AND created_at < now() - make_interval(days => :days)
        LIMIT :batch)
"""


# The questions the bot could not answer and the managers' answers suggested as knowledge hold customers' words:
# kept as long as the client's messages.
_GAPS = """
    DELETE FROM knowledge_gaps WHERE id IN (
        SELECT id FROM knowledge_gaps
        WHERE client_id = :client_id AND created_at < now() - make_interval(days => :days)
        LIMIT :batch)
"""
_SUGGESTIONS = """
    DELETE FROM kb_suggestions WHERE id IN (
        SELECT id FROM kb_suggestions
        WHERE client_id = :client_id AND created_at < now() - make_interval(days => :days)
        LIMIT :batch)
"""


def prune() -> dict[str, int]:
    """Delete what is past its retention; how many rows of each kind."""
    with session_scope() as session:
        rows = session.execute(select(Client.id, Client.settings)).all()
    retention = [(client_id, ClientSettings.from_stored(own).retention_days) for client_id, own in rows]
    deleted = {
        **{
            kind: sum(_in_batches(statement, {"client_id": client_id, "days": days}) for client_id, days in retention)
            for kind, statement in (("messages", _MESSAGES), ("knowledge_gaps", _GAPS), ("kb_suggestions", _SUGGESTIONS))
        },
        "telegram_updates": _in_batches(_TELEGRAM_UPDATES, {"days": settings.telegram_updates_retention_days}),
        "outbox": _in_batches(_OUTBOX, {"days": settings.outbox_retention_days}),
    }
    if any(deleted.values()):
        logger.info("retention.pruned", extra=deleted)
    return deleted


def _in_batches(statement: str, params: dict[str, object]) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        with session_scope() as session:
            result = session.execute(text(statement), {**params, "batch": BATCH})
            count = int(getattr(result, "rowcount", 0) or 0)
        total += count
        if count < BATCH:
            break
    return total
