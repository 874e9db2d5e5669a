"""Accepting a customer's message from the webhook: de-duplicate it, store it once, move its turn. Nothing
slow happens here (no AI, no messenger): the turn is answered later, off the request path (turn.py).

The hottest code of the service (see docs/benchmarks.md): one Redis round trip and one PostgreSQL
statement per delivery, on the raw driver connection.
"""

import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from app import metrics
from app.db import execute_once, session_scope
from app.models import MessageRole, MessageStatus
from app.redis_client import redis_client
from app.schemas.chatflow import ChatFlowWebhook, IgnoreReason, IngestStatus
from app.services.channels import outbox
from app.services.clients import ClientInfo
from app.services.conversation import scheduling
from app.services.handover import lifecycle
from app.utils.errors import BadRequest

logger = logging.getLogger(__name__)

_DEDUP_TTL_SECONDS = 3 * 24 * 3600
# Each returning customer's conversation, so the webhook de-duplicates a delivery and moves its turn in one
# Redis round trip. Per process; a stale entry (a conversation deleted since) only costs a round trip.
_KNOWN_CONVERSATIONS_MAX = 50_000
_known_conversations: dict[tuple[uuid.UUID, str], uuid.UUID] = {}

# One round trip: upsert the customer and the conversation, store the message unless it is a duplicate.
# Touching the conversation row also serialises this insert with a turn being finalised (turn.py, _finish).
# Written for the driver directly (psycopg2 placeholders, explicit casts): the webhook's hottest statement
# skips SQLAlchemy's per-call compilation of its parameters.
_STORE_INBOUND = """
    WITH u AS (
        INSERT INTO users (client_id, phone, remote_jid, name)
        VALUES (CAST(%(client_id)s AS uuid), %(phone)s, %(remote_jid)s, %(name)s)
        ON CONFLICT (client_id, phone)
        DO UPDATE SET remote_jid = EXCLUDED.remote_jid, name = COALESCE(EXCLUDED.name, users.name)
        RETURNING id
    ), c AS (
        INSERT INTO conversations (client_id, user_id, last_message_at)
        SELECT CAST(%(client_id)s AS uuid), u.id, now() FROM u
        ON CONFLICT (client_id, user_id) DO UPDATE SET last_message_at = now()
        RETURNING id
    )
    INSERT INTO messages (client_id, conversation_id, role, type, content, external_id, status, metadata)
    SELECT CAST(%(client_id)s AS uuid), c.id, %(role)s, %(type)s, %(content)s, %(external_id)s, %(status)s,
           CAST(%(metadata)s AS jsonb)
    FROM c
    ON CONFLICT (client_id, external_id) DO NOTHING
    RETURNING id, conversation_id
    """


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: IngestStatus
    reason: IgnoreReason | None = None
    conversation_id: uuid.UUID | None = None


def ingest(*, client: ClientInfo, payload: ChatFlowWebhook) -> IngestResult:
    """Store one webhook delivery exactly once and schedule its turn. Never waits on AI or messengers."""
    meta = payload.metadata
    log = {"client": client.slug, "external_id": meta.message_id, "type": payload.message_type}
    if payload.is_group_or_broadcast:
        logger.info("webhook.ignored", extra={**log, "reason": IgnoreReason.GROUP_OR_BROADCAST})
        return IngestResult(IngestStatus.IGNORED, IgnoreReason.GROUP_OR_BROADCAST)
    phone = payload.phone
    if phone is None:
        raise BadRequest("metadata.remoteJid carries no phone number")
    log["phone"] = phone
    if payload.from_me:
        return _ingest_from_me(client=client, payload=payload, phone=phone, log=log)

    move = scheduling.turn_move(client, payload)
    dedup_key = f"dedup:{client.id}:{meta.message_id}"
    known = _known_conversations.get((client.id, phone))
    moved_due_ms = None
    if known is None:
        first_seen = _mark_seen(dedup_key)
    else:
        first_seen, moved_due_ms = _mark_seen_and_move(dedup_key, known, move)
    if first_seen is False:
        metrics.duplicates.labels(client.slug).inc()
        logger.info("webhook.duplicate", extra={**log, "guard": "redis"})
        return IngestResult(IngestStatus.DUPLICATE)
    try:
        stored = _store(client_id=client.id, payload=payload, phone=phone, role=MessageRole.USER, status=MessageStatus.RECEIVED)
    except Exception:
        # So the gateway's retry of this delivery is not taken for a duplicate. Also when the mark's outcome
        # is unknown (None): a Redis call that timed out may still have set the key.
        _forget_seen(dedup_key)
        raise
    if stored is None:
        metrics.duplicates.labels(client.slug).inc()
        logger.info("webhook.duplicate", extra={**log, "guard": "postgres"})
        return IngestResult(IngestStatus.DUPLICATE)
    _message_id, conversation_id = stored
    _remember_conversation(client.id, phone, conversation_id)
    metrics.messages_received.labels(client.slug).inc()
    # The turn was moved before the store; if it may have been claimed since (due at once at its cap, made
    # due sooner by a later message, or the store was slow) or the conversation is not the one remembered,
    # it is moved again now.
    scheduled = move.settle(conversation_id, moved_due_ms=moved_due_ms if conversation_id == known else None)
    if logger.isEnabledFor(logging.INFO):  # the hottest log line: its fields are not built when it is off
        logger.info(
            "webhook.accepted",
            extra={
                **log,
                "conversation_id": str(conversation_id),
                "scheduled": scheduled,
                "wait_seconds": move.wait_seconds,
                "lag_seconds": move.lag_seconds,
            },
        )
    return IngestResult(IngestStatus.OK, conversation_id=conversation_id)


def _ingest_from_me(*, client: ClientInfo, payload: ChatFlowWebhook, phone: str, log: dict[str, Any]) -> IngestResult:
    """The gateway's echo of our own send is dropped; a staff member writing from the business phone is stored."""
    if outbox.is_echo(client.id, phone, payload.text, payload.metadata.message_id):
        logger.info("webhook.ignored", extra={**log, "reason": IgnoreReason.ECHO})
        return IngestResult(IngestStatus.IGNORED, IgnoreReason.ECHO)
    stored = _store(
        client_id=client.id, payload=payload, phone=phone, role=MessageRole.MANAGER, status=MessageStatus.IGNORED, source="business_phone"
    )
    if stored is None:
        return IngestResult(IngestStatus.DUPLICATE)
    with session_scope() as session:
        lifecycle.mute_for_staff(session, conversation_id=stored[1], minutes=client.settings.staff_mute_minutes)
    logger.info("webhook.ignored", extra={**log, "reason": IgnoreReason.FROM_ME, "conversation_id": str(stored[1])})
    return IngestResult(IngestStatus.IGNORED, IgnoreReason.FROM_ME, conversation_id=stored[1])


def _mark_seen(key: str) -> bool | None:
    """True: first delivery; False: seen before; None: Redis unavailable (PostgreSQL's constraint decides)."""
    try:
        return bool(redis_client.set(key, 1, nx=True, ex=_DEDUP_TTL_SECONDS))
    except redis.RedisError as exc:
        logger.warning("webhook.dedup_unavailable", extra={"error_type": type(exc).__name__})
        return None


def _mark_seen_and_move(key: str, conversation_id: uuid.UUID, move: scheduling.TurnMove) -> tuple[bool | None, int | None]:
    """_mark_seen, and for a first delivery also move the conversation's turn, in one round trip; with the
    soonest the turn may now fall due."""
    try:
        due_ms = move.first_delivery(conversation_id, dedup_key=key, dedup_ttl_seconds=_DEDUP_TTL_SECONDS)
    except redis.RedisError as exc:
        logger.warning("webhook.dedup_unavailable", extra={"error_type": type(exc).__name__})
        return None, None
    return due_ms is not None, due_ms


def _remember_conversation(client_id: uuid.UUID, phone: str, conversation_id: uuid.UUID) -> None:
    if len(_known_conversations) >= _KNOWN_CONVERSATIONS_MAX:
        _known_conversations.clear()  # rare; each returning customer pays one more round trip once
    _known_conversations[(client_id, phone)] = conversation_id


def forget_conversations() -> None:
    """Forget the remembered conversations (a wrong one only costs a round trip, see ingest)."""
    _known_conversations.clear()


def _forget_seen(key: str) -> None:
    with contextlib.suppress(redis.RedisError):
        redis_client.delete(key)


def _store(
    *, client_id: uuid.UUID, payload: ChatFlowWebhook, phone: str, role: MessageRole, status: MessageStatus, source: str | None = None
) -> tuple[uuid.UUID, uuid.UUID] | None:
    media = payload.media.model_dump(exclude_none=True) if payload.media else None
    metadata: dict[str, Any] = {"sender": payload.metadata.sender, "timestamp": payload.metadata.timestamp}
    if media:
        metadata["media"] = media
    if source:
        metadata["source"] = source
    row = execute_once(
        _STORE_INBOUND,
        {
            "client_id": str(client_id),
            "phone": phone,
            "remote_jid": payload.metadata.remote_jid,
            "name": payload.metadata.sender,
            "role": role.value,  # plain strings: the driver adapts an enum member by a slower lookup
            "type": payload.message_type.value,
            "content": payload.text,
            "external_id": payload.metadata.message_id,
            "status": status.value,
            "metadata": json.dumps(metadata, ensure_ascii=False),
        },
    )
    return (uuid.UUID(str(row[0])), uuid.UUID(str(row[1]))) if row else None
