"""The pipeline of a customer message: accept it on the webhook, then answer its whole turn off the request path."""

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import LockError
from sqlalchemy import exists, select, text, update
from sqlalchemy.orm import Session

from app.config import settings
from app.db import session_scope
from app.models import Client, Conversation, Message, User
from app.redis_client import redis_client
from app.schemas.chatflow import ChatFlowWebhook
from app.schemas.client import ClientSettings
from app.services import ai_service, buffer_service, client_service, escalation_service, outbox_service
from app.services.ai_service import ChatTurn
from app.services.client_service import ClientInfo
from app.services.replies import FALLBACK_RESPONSES, NOT_CONFIGURED
from app.utils.errors import BadRequest, ConfigError, ExternalServiceError
from app.utils.text import split_text

logger = logging.getLogger(__name__)

_DEDUP_TTL_SECONDS = 3 * 24 * 3600

# One round trip: upsert the customer and the conversation, store the message unless it is a duplicate.
# Touching the conversation row also serialises this insert with a turn being finalised (see _finish).
_STORE_INBOUND = text(
    """
    WITH u AS (
        INSERT INTO users (client_id, phone, remote_jid, name)
        VALUES (:client_id, :phone, :remote_jid, :name)
        ON CONFLICT (client_id, phone)
        DO UPDATE SET remote_jid = EXCLUDED.remote_jid, name = COALESCE(EXCLUDED.name, users.name)
        RETURNING id
    ), c AS (
        INSERT INTO conversations (client_id, user_id, last_message_at)
        SELECT :client_id, u.id, now() FROM u
        ON CONFLICT (client_id, user_id) DO UPDATE SET last_message_at = now()
        RETURNING id
    )
    INSERT INTO messages (client_id, conversation_id, role, type, content, external_id, status, metadata)
    SELECT :client_id, c.id, :role, :type, :content, :external_id, :status, CAST(:metadata AS jsonb) FROM c
    ON CONFLICT (client_id, external_id) DO NOTHING
    RETURNING id, conversation_id
    """
)


@dataclass(frozen=True)
class IngestResult:
    status: str  # "ok" | "duplicate" | "ignored"
    reason: str | None = None
    conversation_id: uuid.UUID | None = None


def ingest(*, client: ClientInfo, payload: ChatFlowWebhook) -> IngestResult:
    """Store one webhook delivery exactly once and schedule its turn. Never waits on AI or messengers."""
    meta = payload.metadata
    log = {"client": client.slug, "external_id": meta.message_id, "type": payload.message_type}
    if payload.is_group_or_broadcast:
        logger.info("webhook.ignored", extra={**log, "reason": "group_or_broadcast"})
        return IngestResult("ignored", "group_or_broadcast")
    phone = payload.phone
    if phone is None:
        raise BadRequest("metadata.remoteJid carries no phone number")
    log["phone"] = phone
    if payload.from_me:
        return _ingest_from_me(client=client, payload=payload, phone=phone, log=log)

    dedup_key = f"dedup:{client.id}:{meta.message_id}"
    first_seen = _mark_seen(dedup_key)
    if first_seen is False:
        logger.info("webhook.duplicate", extra={**log, "guard": "redis"})
        return IngestResult("duplicate")
    try:
        stored = _store(client_id=client.id, payload=payload, phone=phone, role="user", status="received")
    except Exception:
        if first_seen:
            _forget_seen(dedup_key)  # so the gateway's retry of this delivery is not taken for a duplicate
        raise
    if stored is None:
        logger.info("webhook.duplicate", extra={**log, "guard": "postgres"})
        return IngestResult("duplicate")
    _message_id, conversation_id = stored
    timing = buffer_service.TurnTiming(
        wait_seconds=client.settings.buffer_wait_seconds
        if client.settings.buffer_wait_seconds is not None
        else settings.buffer_wait_seconds,
        max_wait_seconds=client.settings.buffer_max_wait_seconds
        if client.settings.buffer_max_wait_seconds is not None
        else settings.buffer_max_wait_seconds,
    )
    wait = buffer_service.wait_for(message_type=payload.message_type, text=payload.text, timing=timing)
    scheduled = buffer_service.schedule_turn(conversation_id=conversation_id, wait_seconds=wait, max_wait_seconds=timing.max_wait_seconds)
    logger.info("webhook.accepted", extra={**log, "conversation_id": str(conversation_id), "scheduled": scheduled, "wait_seconds": wait})
    return IngestResult("ok", conversation_id=conversation_id)


def _ingest_from_me(*, client: ClientInfo, payload: ChatFlowWebhook, phone: str, log: dict[str, Any]) -> IngestResult:
    """The gateway's echo of our own send is dropped; a staff member writing from the business phone is stored."""
    if outbox_service.is_echo(client.id, phone, payload.text, payload.metadata.message_id):
        logger.info("webhook.ignored", extra={**log, "reason": "echo"})
        return IngestResult("ignored", "echo")
    stored = _store(client_id=client.id, payload=payload, phone=phone, role="manager", status="ignored", source="business_phone")
    if stored is None:
        return IngestResult("duplicate")
    logger.info("webhook.ignored", extra={**log, "reason": "from_me", "conversation_id": str(stored[1])})
    return IngestResult("ignored", "from_me", conversation_id=stored[1])


def _mark_seen(key: str) -> bool | None:
    """True: first delivery; False: seen before; None: Redis unavailable (PostgreSQL's constraint decides)."""
    try:
        return bool(redis_client.set(key, 1, nx=True, ex=_DEDUP_TTL_SECONDS))
    except redis.RedisError as exc:
        logger.warning("webhook.dedup_unavailable", extra={"error_type": type(exc).__name__})
        return None


def _forget_seen(key: str) -> None:
    with contextlib.suppress(redis.RedisError):
        redis_client.delete(key)


def _store(
    *, client_id: uuid.UUID, payload: ChatFlowWebhook, phone: str, role: str, status: str, source: str | None = None
) -> tuple[uuid.UUID, uuid.UUID] | None:
    media = payload.media.model_dump(exclude_none=True) if payload.media else None
    metadata: dict[str, Any] = {"sender": payload.metadata.sender, "timestamp": payload.metadata.timestamp}
    if media:
        metadata["media"] = media
    if source:
        metadata["source"] = source
    with session_scope() as session:
        row = session.execute(
            _STORE_INBOUND,
            {
                "client_id": client_id,
                "phone": phone,
                "remote_jid": payload.metadata.remote_jid,
                "name": payload.metadata.sender,
                "role": role,
                "type": payload.message_type,
                "content": payload.text,
                "external_id": payload.metadata.message_id,
                "status": status,
                "metadata": json.dumps(metadata, ensure_ascii=False),
            },
        ).first()
    return (row.id, row.conversation_id) if row else None


# ---------------------------------------------------------------------------------------------------
# The turn: runs on the job queue.


@dataclass
class Turn:
    """One customer turn being answered, with what was read about it in the opening transaction."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    client_id: uuid.UUID
    client_slug: str
    client_name: str
    prompt: str
    client_settings: ClientSettings
    phone: str
    messages: list[Message]
    history: list[ChatTurn]
    bot_muted: bool
    has_open_handover: bool
    started: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.content.strip())

    @property
    def log(self) -> dict[str, Any]:
        return {"conversation_id": str(self.conversation_id), "client": self.client_slug, "phone": self.phone, "turn_id": str(self.id)}


@dataclass(frozen=True)
class Reply:
    text: str | None
    escalate_reason: str | None = None
    intent: str | None = None


def process_turn(conversation_id: uuid.UUID) -> str:
    """Answer the conversation's pending turn once it is due. Returns what happened (for logs and tests)."""
    wait = buffer_service.claim_due(conversation_id)
    if wait > 0:
        buffer_service.enqueue_turn(conversation_id, delay_seconds=wait)
        return "rescheduled"
    lock = buffer_service.turn_lock(conversation_id)
    if not lock.acquire():
        # Another worker is answering this conversation; come back after it has finished.
        buffer_service.enqueue_turn(conversation_id, delay_seconds=0.5)
        return "locked"
    try:
        return _run_turn(conversation_id)
    finally:
        try:
            lock.release()
        except LockError:
            logger.warning("turn.lock_expired", extra={"conversation_id": str(conversation_id)})


def _run_turn(conversation_id: uuid.UUID) -> str:
    turn = _open_turn(conversation_id)
    if turn is None:
        return "empty"
    reply = _decide(turn)
    outcome, outbox_id = _finish(turn, reply)
    if outbox_id is not None:
        outbox_service.deliver(outbox_id)
    logger.info(
        "turn.processed",
        extra={
            **turn.log,
            "outcome": outcome,
            "messages": len(turn.messages),
            "intent": reply.intent,
            "escalated": reply.escalate_reason,
            "response_time_ms": _response_time_ms(turn),
            "processing_ms": int((time.monotonic() - turn.started) * 1000),
        },
    )
    return outcome


def _open_turn(conversation_id: uuid.UUID) -> Turn | None:
    """Claim every received message of the conversation for this turn, and read what answering needs."""
    turn_id = uuid.uuid4()
    with session_scope() as session:
        claimed = list(
            session.scalars(
                update(Message)
                .where(Message.conversation_id == conversation_id, Message.status == "received")
                .values(status="processing", turn_id=turn_id, claimed_at=text("now()"))
                .returning(Message)
            )
        )
        if not claimed:
            return None
        claimed.sort(key=lambda m: (m.created_at, m.id))
        conversation = session.get(Conversation, conversation_id)
        assert conversation is not None
        client = session.get(Client, conversation.client_id)
        user = session.get(User, conversation.user_id)
        assert client is not None and user is not None
        now = _db_now(session)
        return Turn(
            id=turn_id,
            conversation_id=conversation_id,
            client_id=client.id,
            client_slug=client.slug,
            client_name=client.name,
            prompt=client.prompt,
            client_settings=client_service.settings_of(client),
            phone=user.phone,
            messages=claimed,
            history=_history(session, conversation_id, turn_id),
            bot_muted=conversation.bot_muted(now),
            has_open_handover=escalation_service.open_handover(session, conversation_id) is not None,
        )


def _history(session: Session, conversation_id: uuid.UUID, turn_id: uuid.UUID) -> list[ChatTurn]:
    """Recent messages before this turn; the business's side (bot or manager) is the assistant."""
    rows = session.execute(
        select(Message.role, Message.content)
        .where(
            Message.conversation_id == conversation_id,
            Message.role.in_(("user", "assistant", "manager")),
            Message.status.in_(("processed", "sent", "pending", "ignored", "failed")),
            (Message.turn_id.is_(None)) | (Message.turn_id != turn_id),
        )
        .order_by(Message.created_at.desc())
        .limit(settings.history_messages)
    ).all()
    return [ChatTurn("user" if role == "user" else "assistant", content) for role, content in reversed(rows)]


def _decide(turn: Turn) -> Reply:
    """What to answer. Runs outside any transaction: it calls the language model."""
    if turn.has_open_handover or turn.bot_muted:
        return Reply(text=None)
    if not turn.text.strip():
        return Reply(text=None)
    if not ai_service.is_configured():
        return Reply(text=NOT_CONFIGURED)
    try:
        answer = ai_service.generate_reply(
            system_prompt=turn.prompt,
            history=turn.history,
            turn_text=turn.text,
            client_name=turn.client_name,
            log_extra=turn.log,
        )
    except ConfigError:
        return Reply(text=NOT_CONFIGURED)
    except ExternalServiceError:
        return Reply(text=FALLBACK_RESPONSES["ai_error"], escalate_reason="ai_error")
    return Reply(text=answer)


def _finish(turn: Turn, reply: Reply) -> tuple[str, uuid.UUID | None]:
    """Commit the turn's outcome, unless the customer wrote again meanwhile: then one later answer covers all."""
    with session_scope() as session:
        conversation = session.scalar(select(Conversation).where(Conversation.id == turn.conversation_id).with_for_update())
        assert conversation is not None
        newer = session.scalar(select(exists().where(Message.conversation_id == turn.conversation_id, Message.status == "received")))
        if newer and reply.text is not None:
            session.execute(
                update(Message)
                .where(Message.turn_id == turn.id, Message.status == "processing")
                .values(status="received", turn_id=None, claimed_at=None)
            )
            return "superseded", None
        if reply.escalate_reason:
            escalation_service.escalate(session, conversation=conversation, reason=reply.escalate_reason)
        session.execute(
            update(Message)
            .where(Message.turn_id == turn.id, Message.status == "processing")
            .values(status="processed", intent=reply.intent)
        )
        if reply.text is None:
            return ("muted" if turn.bot_muted or turn.has_open_handover else "no_reply"), None
        answer = Message(
            client_id=turn.client_id,
            conversation_id=turn.conversation_id,
            role="assistant",
            type="text",
            content=reply.text,
            status="pending",
            turn_id=turn.id,
            meta={"reason": reply.escalate_reason} if reply.escalate_reason else {},
        )
        session.add(answer)
        session.flush()
        outbox_id = outbox_service.add(
            session,
            client_id=turn.client_id,
            conversation_id=turn.conversation_id,
            channel="whatsapp",
            kind="text",
            payload={"phone": turn.phone, "parts": split_text(reply.text)},
            dedup_key=f"reply:{turn.id}",
            message_id=answer.id,
        )
        return "answered", outbox_id


def _response_time_ms(turn: Turn) -> int:
    """From the customer's last message of the turn until its answer was handed to the messenger."""
    last = max(m.created_at for m in turn.messages)
    return int((datetime.now(UTC) - last).total_seconds() * 1000)


def _db_now(session: Session) -> datetime:
    return session.scalar(select(text("now()")))  # type: ignore[return-value]
