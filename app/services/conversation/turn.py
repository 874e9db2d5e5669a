"""The pipeline of a customer message: accept it on the webhook, then answer its whole turn off the request path."""

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import LockError
from sqlalchemy import exists, func, select, text, update
from sqlalchemy.orm import Session

from app import metrics
from app.config import settings
from app.db import execute_once, session_scope
from app.models import (
    BotStatus,
    Client,
    Conversation,
    HandoverReason,
    HandoverStatus,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    User,
)
from app.redis_client import redis_client
from app.schemas.chatflow import ChatFlowWebhook
from app.schemas.client import ClientSettings
from app.services import clients, replies
from app.services.channels import outbox, stt
from app.services.channels.media import fetch_media
from app.services.clients import ClientInfo
from app.services.conversation import assistant, intent, scheduling
from app.services.conversation.assistant import ChatTurn
from app.services.handover import lifecycle
from app.services.knowledge import kb
from app.services.operations import alerts
from app.services.replies import FALLBACK_RESPONSES
from app.utils.errors import BadRequest, ConfigError, ExternalServiceError, MediaRejected
from app.utils.text import split_text

logger = logging.getLogger(__name__)

_DEDUP_TTL_SECONDS = 3 * 24 * 3600
# Each returning customer's conversation, so the webhook de-duplicates a delivery and moves its turn in one
# Redis round trip. Per process; a stale entry (a conversation deleted since) only costs a round trip.
_KNOWN_CONVERSATIONS_MAX = 50_000
_known_conversations: dict[tuple[uuid.UUID, str], uuid.UUID] = {}

# One round trip: upsert the customer and the conversation, store the message unless it is a duplicate.
# Touching the conversation row also serialises this insert with a turn being finalised (see _finish).
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

    timing = scheduling.TurnTiming(
        wait_seconds=client.settings.buffer_wait_seconds
        if client.settings.buffer_wait_seconds is not None
        else settings.buffer_wait_seconds,
        max_wait_seconds=client.settings.buffer_max_wait_seconds
        if client.settings.buffer_max_wait_seconds is not None
        else settings.buffer_max_wait_seconds,
    )
    lag = scheduling.delivery_lag(payload.metadata.timestamp)
    wait = scheduling.wait_for(message_type=payload.message_type, text=payload.text, timing=timing)
    turn = {"client_id": client.id, "wait_seconds": wait, "max_wait_seconds": timing.max_wait_seconds, "lag_seconds": lag}

    dedup_key = f"dedup:{client.id}:{meta.message_id}"
    known = _known_conversations.get((client.id, phone))
    due_ms = None
    if known is None:
        first_seen = _mark_seen(dedup_key)
    else:
        first_seen, due_ms = _mark_seen_and_move(dedup_key, known, turn, scheduling.shortest_wait(timing))
    if first_seen is False:
        metrics.duplicates.labels(client.slug).inc()
        logger.info("webhook.duplicate", extra={**log, "guard": "redis"})
        return IngestResult("duplicate")
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
        return IngestResult("duplicate")
    _message_id, conversation_id = stored
    _remember_conversation(client.id, phone, conversation_id)
    metrics.messages_received.labels(client.slug).inc()
    # The turn was moved before the store; if it may have been claimed since (due at once at its cap, made
    # due sooner by a later message, or the store was slow) or the conversation is not the one remembered,
    # it is moved again now.
    if due_ms is not None and conversation_id == known and scheduling.still_ahead(due_ms):
        scheduled = True
    else:
        scheduled = scheduling.schedule_turn(conversation_id=conversation_id, **turn)
    if logger.isEnabledFor(logging.INFO):  # the hottest log line: its fields are not built when it is off
        logger.info(
            "webhook.accepted",
            extra={**log, "conversation_id": str(conversation_id), "scheduled": scheduled, "wait_seconds": wait, "lag_seconds": lag},
        )
    return IngestResult("ok", conversation_id=conversation_id)


def _ingest_from_me(*, client: ClientInfo, payload: ChatFlowWebhook, phone: str, log: dict[str, Any]) -> IngestResult:
    """The gateway's echo of our own send is dropped; a staff member writing from the business phone is stored."""
    if outbox.is_echo(client.id, phone, payload.text, payload.metadata.message_id):
        logger.info("webhook.ignored", extra={**log, "reason": "echo"})
        return IngestResult("ignored", "echo")
    stored = _store(
        client_id=client.id, payload=payload, phone=phone, role=MessageRole.MANAGER, status=MessageStatus.IGNORED, source="business_phone"
    )
    if stored is None:
        return IngestResult("duplicate")
    with session_scope() as session:
        lifecycle.mute_for_staff(session, conversation_id=stored[1], minutes=client.settings.staff_mute_minutes)
    logger.info("webhook.ignored", extra={**log, "reason": "from_me", "conversation_id": str(stored[1])})
    return IngestResult("ignored", "from_me", conversation_id=stored[1])


def _mark_seen(key: str) -> bool | None:
    """True: first delivery; False: seen before; None: Redis unavailable (PostgreSQL's constraint decides)."""
    try:
        return bool(redis_client.set(key, 1, nx=True, ex=_DEDUP_TTL_SECONDS))
    except redis.RedisError as exc:
        logger.warning("webhook.dedup_unavailable", extra={"error_type": type(exc).__name__})
        return None


def _mark_seen_and_move(key: str, conversation_id: uuid.UUID, turn: dict[str, Any], shortest_wait: float) -> tuple[bool | None, int | None]:
    """_mark_seen, and for a first delivery also move the conversation's turn, in one round trip; with the
    soonest the turn may now fall due."""
    try:
        due_ms = scheduling.schedule_first_delivery(
            dedup_key=key,
            dedup_ttl_seconds=_DEDUP_TTL_SECONDS,
            conversation_id=conversation_id,
            shortest_wait_seconds=shortest_wait,
            **turn,
        )
    except redis.RedisError as exc:
        logger.warning("webhook.dedup_unavailable", extra={"error_type": type(exc).__name__})
        return None, None
    return due_ms is not None, due_ms


def _remember_conversation(client_id: uuid.UUID, phone: str, conversation_id: uuid.UUID) -> None:
    if len(_known_conversations) >= _KNOWN_CONVERSATIONS_MAX:
        _known_conversations.clear()  # rare; each returning customer pays one more round trip once
    _known_conversations[(client_id, phone)] = conversation_id


def clear_cache() -> None:
    """Forget the remembered conversations (tests; a wrong one only costs a round trip, see ingest)."""
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
    customer_name: str | None
    messages: list[Message]
    history: list[ChatTurn]
    bot_muted: bool
    handover_status: str | None
    parts: list["TurnPart"] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def customer_text(self) -> str:
        """What the customer wrote or said (transcripts in place of voice notes), in order."""
        return "\n".join(p.text for p in self.parts if p.text.strip())

    @property
    def text(self) -> str:
        """The turn for the model and the manager: the customer's words with notes about attachments."""
        return "\n".join(p.line for p in self.parts if p.line)

    @property
    def voice_failed_only(self) -> bool:
        return bool(self.parts) and not self.customer_text and any(p.failed for p in self.parts)

    @property
    def attachments_only(self) -> bool:
        return not self.customer_text and any(p.type in _ATTACHMENTS for p in self.parts)

    @property
    def log(self) -> dict[str, Any]:
        return {"conversation_id": str(self.conversation_id), "client": self.client_slug, "phone": self.phone, "turn_id": str(self.id)}


_ATTACHMENTS = (MessageType.IMAGE, MessageType.VIDEO, MessageType.DOCUMENT)
_NOTES = {
    MessageType.IMAGE: "[изображение]",
    MessageType.VIDEO: "[видео]",
    MessageType.DOCUMENT: "[документ]",
    MessageType.LOCATION: "[геолокация]",
    MessageType.CONTACT: "[контакт]",
    MessageType.STICKER: "[стикер]",
}
VOICE_FAILED_NOTE = "[голосовое сообщение: не удалось распознать]"


@dataclass(frozen=True)
class TurnPart:
    """One message of the turn as the customer meant it: a transcript for a voice note, a note for a file."""

    message_id: uuid.UUID
    type: MessageType
    text: str
    note: str | None = None
    media: dict[str, Any] | None = None
    failed: bool = False

    @property
    def line(self) -> str:
        return " ".join(piece for piece in (self.note, self.text.strip()) if piece)


def prefetch_turn(conversation_id: uuid.UUID) -> None:
    """Prepare a waiting turn's knowledge query while the customer pauses (see scheduling.Dispatcher).

    Only text turns the bot will answer: a voice note's words are not known before the turn transcribes
    it, and a muted bot or an open handover searches no knowledge."""
    with session_scope() as session:
        conversation, now = session.execute(select(Conversation, func.now()).where(Conversation.id == conversation_id)).one()
        if conversation.bot_muted(now) or lifecycle.open_handover(session, conversation_id) is not None:
            return
        rows = session.execute(
            select(Message.type, Message.content)
            .where(Message.conversation_id == conversation_id, Message.status == MessageStatus.RECEIVED)
            .order_by(Message.created_at, Message.id)
        ).all()
    if not rows or any(type_ != MessageType.TEXT for type_, _ in rows):
        return
    kb.warm_query("\n".join(content for _, content in rows if content.strip()))


@dataclass(frozen=True)
class Decision:
    """What the turn does. Decided outside any transaction (it may call the LLM), applied in one."""

    action: str  # "answer" | "escalate" | "forward" | "opt_out" | "store"
    text: str | None = None  # what the customer is sent
    reason: str | None = None  # handover reason, for "escalate"
    intent: str | None = None
    intent_source: str | None = None


def process_turn(conversation_id: uuid.UUID) -> str:
    """Answer the conversation's pending turn once it is due. Returns what happened (for logs and tests)."""
    if scheduling.claim_due(conversation_id) > 0:
        return "rescheduled"  # a later message moved the turn: it is dispatched again when due
    lock = scheduling.turn_lock(conversation_id)
    if not lock.acquire():
        # Another worker is answering this conversation; come back after it has finished.
        scheduling.enqueue_turn(conversation_id, delay_seconds=0.5)
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
    try:
        turn.parts = [_prepare(turn, message) for message in turn.messages]
        decision = _decide(turn)
        outcome, outbox_ids = _finish(turn, decision)
    except Exception:
        _release(turn)  # the job is retried with backoff; the messages must be there to claim again
        raise
    for outbox_id in outbox_ids:
        outbox.deliver(outbox_id)
    response_ms = _response_time_ms(turn)
    metrics.turns.labels(turn.client_slug, outcome).inc()
    if outcome in ("answer", "escalate", "escalate_repeat", "opt_out"):
        metrics.response_time.labels(turn.client_slug).observe(response_ms / 1000)
        alerts.record_response(response_ms / 1000)
    if outcome == "escalate":
        metrics.escalations.labels(turn.client_slug, decision.reason or "-").inc()
    logger.info(
        "turn.processed",
        extra={
            **turn.log,
            "outcome": outcome,
            "messages": len(turn.messages),
            "intent": decision.intent,
            "intent_source": decision.intent_source,
            "escalated": decision.reason,
            "response_time_ms": response_ms,
            "processing_ms": int((time.monotonic() - turn.started) * 1000),
        },
    )
    return outcome


def _unclaim(turn_id: uuid.UUID) -> Any:
    """Give a turn's messages back, to be claimed by a later turn."""
    return (
        update(Message)
        .where(Message.turn_id == turn_id, Message.status == MessageStatus.PROCESSING)
        .values(status=MessageStatus.RECEIVED, turn_id=None, claimed_at=None)
    )


def _release(turn: Turn) -> None:
    with session_scope() as session:
        session.execute(_unclaim(turn.id))
    logger.error("turn.failed", extra=turn.log)


def _open_turn(conversation_id: uuid.UUID) -> Turn | None:
    """Claim every received message of the conversation for this turn, and read what answering needs."""
    turn_id = uuid.uuid4()
    with session_scope() as session:
        claimed = list(
            session.scalars(
                update(Message)
                .where(Message.conversation_id == conversation_id, Message.status == MessageStatus.RECEIVED)
                .values(status=MessageStatus.PROCESSING, turn_id=turn_id, claimed_at=text("now()"))
                .returning(Message)
            )
        )
        if not claimed:
            return None
        claimed.sort(key=lambda m: (m.created_at, m.id))
        conversation, client, user, now = session.execute(
            select(Conversation, Client, User, func.now())
            .join(Client, Client.id == Conversation.client_id)
            .join(User, User.id == Conversation.user_id)
            .where(Conversation.id == conversation_id)
        ).one()
        handover = lifecycle.open_handover(session, conversation_id)
        return Turn(
            id=turn_id,
            conversation_id=conversation_id,
            client_id=client.id,
            client_slug=client.slug,
            client_name=client.name,
            prompt=client.prompt,
            client_settings=clients.settings_of(client),
            phone=user.phone,
            customer_name=user.name,
            messages=claimed,
            history=_history(session, conversation_id, turn_id),
            bot_muted=conversation.bot_muted(now),
            handover_status=handover.status if handover else None,
        )


_HISTORY_STATUSES = (MessageStatus.PROCESSED, MessageStatus.SENT, MessageStatus.PENDING, MessageStatus.IGNORED, MessageStatus.FAILED)


def _history(session: Session, conversation_id: uuid.UUID, turn_id: uuid.UUID) -> list[ChatTurn]:
    """Recent messages before this turn; the business's side (bot or manager) is the assistant."""
    rows = session.execute(
        select(Message.role, Message.content)
        .where(
            Message.conversation_id == conversation_id,
            Message.role.in_((MessageRole.USER, MessageRole.ASSISTANT, MessageRole.MANAGER)),
            Message.status.in_(_HISTORY_STATUSES),
            (Message.turn_id.is_(None)) | (Message.turn_id != turn_id),
        )
        .order_by(Message.created_at.desc())
        .limit(settings.history_messages)
    ).all()
    return [ChatTurn("user" if role == MessageRole.USER else "assistant", content) for role, content in reversed(rows)]


def _prepare(turn: Turn, message: Message) -> TurnPart:
    """Read a message as the customer meant it; a voice note is transcribed once and the transcript stored."""
    meta = message.meta or {}
    media = meta.get("media") if isinstance(meta.get("media"), dict) else None
    if message.type == MessageType.AUDIO:
        transcript = meta.get("transcript")
        if transcript is None:
            transcript = _transcribe(turn, message, media)
        if not transcript:
            return TurnPart(message.id, MessageType.AUDIO, "", VOICE_FAILED_NOTE, media, failed=True)
        return TurnPart(message.id, MessageType.AUDIO, transcript, None, media)
    if message.type in _NOTES:
        name = (media or {}).get("fileName") if message.type == MessageType.DOCUMENT else None
        note = f"[документ: {name}]" if name else _NOTES[message.type]
        return TurnPart(message.id, message.type, message.content, note, media)
    if message.type in (MessageType.REACTION, MessageType.OTHER):
        return TurnPart(message.id, message.type, "")
    return TurnPart(message.id, message.type, message.content)


def _transcribe(turn: Turn, message: Message, media: dict[str, Any] | None) -> str | None:
    """Download and transcribe a voice note; None when that failed (the customer is asked to write instead)."""
    try:
        if not media:
            raise MediaRejected("missing")
        blob = fetch_media(media=media)
        transcript = stt.transcribe(audio=blob.data, filename=blob.filename, mimetype=blob.mimetype).text.strip()
    except (MediaRejected, ExternalServiceError, ConfigError) as exc:
        logger.warning("turn.voice_failed", extra={**turn.log, "error_type": type(exc).__name__, "reason": getattr(exc, "reason", None)})
        return None
    with session_scope() as session:
        session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(content=transcript, meta=Message.meta.op("||")(func.jsonb_build_object("transcript", transcript)))
        )
    logger.info("turn.voice_transcribed", extra={**turn.log, "chars": len(transcript)})
    return transcript


def _decide(turn: Turn) -> Decision:
    """Route the turn: a manager's conversation, a muted bot, the customer's "no", a request for a human, or an answer."""
    if not turn.text.strip():
        return Decision("forward" if turn.handover_status else "store")
    if not turn.customer_text:  # only attachments, stickers or an unrecognised voice note
        if turn.handover_status or turn.bot_muted:
            return Decision("forward" if turn.handover_status else "store")
        if turn.voice_failed_only:
            return Decision("answer", text=replies.VOICE_NOT_RECOGNISED)
        if turn.attachments_only:
            return Decision("answer", text=replies.MEDIA_RECEIVED)
        return Decision("store")
    found = intent.classify(turn.customer_text, history=turn.history)
    base = {"intent": found.intent, "intent_source": found.source}
    if turn.handover_status is not None:
        if found.intent == "opt_out" and turn.handover_status == "pending":
            return Decision("opt_out", text=replies.OPT_OUT_ACK, **base)
        return Decision("forward", **base)
    if turn.bot_muted:
        if found.intent == "human_request":
            return Decision("escalate", text=replies.HANDOVER_ACK, reason="human_request", **base)
        return Decision("store", **base)
    if found.intent == "opt_out":
        return Decision("opt_out", text=replies.OPT_OUT_ACK, **base)
    if found.intent in intent.ESCALATE_INTENTS:
        ack = replies.HANDOVER_ACK_FRUSTRATION if found.intent == "frustration" else replies.HANDOVER_ACK
        return Decision("escalate", text=ack, reason=found.intent, **base)
    return _answer(turn, base)


def _answer(turn: Turn, base: dict[str, Any]) -> Decision:
    """The assistant's answer grounded in the client's knowledge. Honest when it does not know: without
    relevant knowledge a factual question gets the no_knowledge reply (and, per client, a manager)."""
    hits = _knowledge(turn)
    relevant = [hit for hit in hits or [] if hit.score >= settings.kb_min_score]
    has_knowledge_base = bool(hits)
    if not assistant.is_configured():
        return _answer_offline(turn, base, relevant)
    if base.get("intent") == "question" and has_knowledge_base and not relevant:
        return _no_knowledge(turn, base)
    try:
        answer = assistant.generate_reply(
            system_prompt=turn.prompt,
            history=turn.history,
            turn_text=turn.text,
            knowledge=[hit.text for hit in relevant],
            client_name=turn.client_name,
            log_extra=turn.log,
        )
    except ConfigError:
        return _answer_offline(turn, base, relevant)
    except ExternalServiceError:
        return Decision("escalate", text=FALLBACK_RESPONSES["ai_error"], reason="ai_error", **base)
    return Decision("answer", text=answer, **base)


def _knowledge(turn: Turn) -> list[kb.KnowledgeHit] | None:
    """The client's best chunks for this turn; None when the knowledge base is unreachable (answer without it)."""
    try:
        return kb.search(client_id=str(turn.client_id), query=turn.customer_text, limit=settings.kb_top_k)
    except ExternalServiceError:
        return None  # qdrant has logged it with service=qdrant
    except Exception as exc:  # the knowledge base is an aid: a bug in it must not cost the customer an answer
        logger.exception("kb.search_crashed", extra={**turn.log, "error_type": type(exc).__name__})
        return None


def _answer_offline(turn: Turn, base: dict[str, Any], relevant: list[kb.KnowledgeHit]) -> Decision:
    """No language model: greet, or quote the knowledge passage when it is a confident match."""
    if base.get("intent") == "greeting":
        return Decision("answer", text=replies.GREETING, **base)
    if relevant and relevant[0].score >= settings.kb_offline_min_score:
        return Decision("answer", text=_passage(relevant[0]), **base)
    return _no_knowledge(turn, base)


def _no_knowledge(turn: Turn, base: dict[str, Any]) -> Decision:
    if turn.client_settings.escalate_on_no_knowledge:
        return Decision("escalate", text=FALLBACK_RESPONSES["no_knowledge"], reason="no_knowledge", **base)
    return Decision("answer", text=FALLBACK_RESPONSES["no_knowledge"], **base)


def _passage(hit: kb.KnowledgeHit) -> str:
    """A chunk as an answer: without its heading path line, at most ~1000 characters."""
    body = hit.text
    if hit.heading and body.startswith(hit.heading):
        body = body[len(hit.heading) :].lstrip(" :\n")
    return split_text(body or hit.text, 1000)[0]


def _finish(turn: Turn, decision: Decision) -> tuple[str, list[uuid.UUID]]:
    """Apply the decision in one transaction, unless the customer wrote again meanwhile: then one later turn covers all."""
    with session_scope() as session:
        conversation = session.scalar(select(Conversation).where(Conversation.id == turn.conversation_id).with_for_update())
        assert conversation is not None
        newer = session.scalar(
            select(exists().where(Message.conversation_id == turn.conversation_id, Message.status == MessageStatus.RECEIVED))
        )
        if newer:
            session.execute(_unclaim(turn.id))
            return "superseded", []
        handover = lifecycle.open_handover(session, conversation.id, lock=True)
        if handover is not None and decision.action in ("answer", "escalate", "store"):
            # A manager stepped in while this turn was being decided: the bot keeps quiet.
            decision = Decision("forward", intent=decision.intent, intent_source=decision.intent_source)
        session.execute(
            update(Message)
            .where(Message.turn_id == turn.id, Message.status == MessageStatus.PROCESSING)
            .values(status=MessageStatus.PROCESSED, intent=decision.intent)
        )
        outcome = decision.action
        if decision.action == "forward":
            _forward(session, turn)
            lifecycle.touch(session, conversation.id)
        elif decision.action == "escalate":
            escalation = lifecycle.escalate(
                session,
                conversation=conversation,
                reason=HandoverReason(decision.reason or HandoverReason.HUMAN_REQUEST),
                client_settings=turn.client_settings,
            )
            if not escalation.created:
                _forward(session, turn, repeat=True)
                outcome = "escalate_repeat"
            text_ = (decision.text or replies.HANDOVER_ACK) if escalation.created else replies.HANDOVER_ALREADY
            _reply(session, turn, text_, reason=decision.reason)
        elif decision.action == "opt_out":
            if handover is not None and handover.status == HandoverStatus.PENDING:
                lifecycle.cancel(session, handover=handover, conversation=conversation)
            _mute_for_opt_out(session, conversation, turn.client_settings)
            _reply(session, turn, decision.text or replies.OPT_OUT_ACK, reason="opt_out")
        elif decision.action == "answer" and decision.text:
            _reply(session, turn, decision.text)
        else:
            outcome = "stored"
        outbox_ids = outbox.written(session)
    return outcome, outbox_ids


def _reply(session: Session, turn: Turn, text_: str, *, reason: str | None = None) -> uuid.UUID:
    return outbox.queue_whatsapp_text(
        session,
        client_id=turn.client_id,
        conversation_id=turn.conversation_id,
        phone=turn.phone,
        text=text_,
        turn_id=turn.id,
        meta={"reason": reason} if reason else None,
        dedup_key=f"reply:{turn.id}",
    )


def _forward(session: Session, turn: Turn, *, repeat: bool = False) -> uuid.UUID:
    """The customer's turn into their Telegram topic, escaped so no character can break the message."""
    body = lifecycle.customer_line(turn.customer_name, turn.text or "(сообщение без текста)")
    if repeat:
        body = "🔁 Клиент снова просит менеджера\n" + body
    item = lifecycle.queue_topic_text(session, client_id=turn.client_id, conversation_id=turn.conversation_id, text=body)
    for part in turn.parts:
        if part.media and part.type in (*_ATTACHMENTS, MessageType.AUDIO):
            lifecycle.queue_topic_media(session, client_id=turn.client_id, conversation_id=turn.conversation_id, message_id=part.message_id)
    return item


def _mute_for_opt_out(session: Session, conversation: Conversation, client_settings: ClientSettings) -> None:
    """The customer asked us to stop: 30 minutes the first time, 24 hours after that (per client)."""
    minutes = client_settings.mute_minutes_first if conversation.mute_count == 0 else client_settings.mute_minutes_repeat
    conversation.bot_status = BotStatus.MUTED
    conversation.bot_muted_until = _db_now(session) + timedelta(minutes=minutes)
    conversation.mute_count += 1


def _response_time_ms(turn: Turn) -> int:
    """From the customer's last message of the turn until its answer was handed to the messenger."""
    last = max(m.created_at for m in turn.messages)
    return int((datetime.now(UTC) - last).total_seconds() * 1000)


def _db_now(session: Session) -> datetime:
    return session.scalar(select(text("now()")))  # type: ignore[return-value]
