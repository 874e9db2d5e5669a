"""The outbox: every message to a messenger is a row first, then delivered, retried with backoff, and
given up on loudly. A reply is written once (dedup_key) and each of its parts is delivered once.

A sender claims an item with a lease (owner, version, locked_until) that its process's heartbeat renews
while the send runs (app/leases.py); its final write checks the version, so a sender that lost its claim
cannot mark the item done. A WhatsApp send whose outcome is unknown (the request went out, no answer came:
a read timeout, or the sender died mid-send and its lease expired) is not repeated, because ChatFlow takes
no idempotency key and the customer would get it twice: the item is marked 'uncertain' and the listeners
told (the manager in the topic, or the operator). Telegram items are retried: a repeated line in a
manager's topic is better than a lost one.

Each kind of item has a payload shape (schemas/outbox.py) and one handler that delivers it; the handlers
and the listeners told of an item given up on are registered by app/bootstrap.py."""

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

import redis
from pydantic import ValidationError
from sqlalchemy import Connection, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db, leases, metrics, queue
from app.config import settings
from app.db import session_scope
from app.models import (
    Client,
    Conversation,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    OutboxChannel,
    OutboxItem,
    OutboxStatus,
    User,
)
from app.queue import Job
from app.redis_client import redis_client
from app.schemas.outbox import PAYLOAD_TYPES, ManagerText, OutboxPayload, WhatsAppText
from app.services.channels import whatsapp
from app.utils.errors import ConfigError, ExternalServiceError
from app.utils.text import split_text

logger = logging.getLogger(__name__)

_BACKOFF_SECONDS = (5, 20, 60, 180, 600, 1800)
_ECHO_TTL_SECONDS = 24 * 3600


P = TypeVar("P", bound=OutboxPayload, covariant=True)


class DeliveryOutcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # failed, tried again after a backoff
    FAILED = "failed"  # given up on
    SKIPPED = "skipped"  # not due, taken by another sender, or gone
    UNCERTAIN = "uncertain"  # may have been delivered; not repeated, someone was told


@dataclass(frozen=True)
class Delivery(Generic[P]):
    """Everything a handler needs to deliver one outbox item, read in a short transaction."""

    id: uuid.UUID
    channel: OutboxChannel
    kind: str  # an OutboxKind, unless the row holds a kind this code does not know (it is given up on)
    payload: P
    result: dict[str, Any]
    attempts: int
    client: Client
    phone: str | None
    conversation_id: uuid.UUID | None
    version: int = 0  # of this sender's claim (lease_version): its writes check it


SaveProgress = Callable[[dict[str, Any]], None]
# A handler delivers one item (raising ExternalServiceError or ConfigError when it cannot) and returns what
# to record as its result; save_progress records the parts already delivered, so a retry resumes after them.
Handler = Callable[[Delivery[P], SaveProgress], dict[str, Any]]
GaveUpListener = Callable[[Delivery[OutboxPayload], str], None]
# Told of a send that may or may not have been delivered; returns whether it told a person (the first that
# did ends the list: the manager in the topic before the operator).
UncertainListener = Callable[[Delivery[OutboxPayload], str], bool]
_handlers: dict[str, Handler[Any]] = {}  # by OutboxKind
_gave_up_listeners: list[GaveUpListener] = []
_uncertain_listeners: list[UncertainListener] = []


def register(payload_type: type[P], handler: Handler[P]) -> None:
    """Have `handler` deliver the items of this payload's kind."""
    _handlers[payload_type.kind] = handler


def on_gave_up(listener: GaveUpListener) -> None:
    """Tell `listener` (delivery, error) of every item given up on."""
    if listener not in _gave_up_listeners:
        _gave_up_listeners.append(listener)


def on_uncertain(listener: UncertainListener) -> None:
    """Tell `listener` (delivery, error) of every send whose outcome is unknown, in the order registered."""
    if listener not in _uncertain_listeners:
        _uncertain_listeners.append(listener)


def add(
    session: Session,
    *,
    client_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    payload: OutboxPayload,
    dedup_key: str | None = None,
    message_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write an item in the caller's transaction; the same dedup_key is written only once."""
    stmt = (
        insert(OutboxItem)
        .values(
            client_id=client_id,
            conversation_id=conversation_id,
            channel=payload.channel,
            kind=payload.kind,
            payload=payload.model_dump(mode="json"),
            dedup_key=dedup_key,
            message_id=message_id,
        )
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(OutboxItem.id)
    )
    item_id = session.scalar(stmt)
    if item_id is None:
        item_id = session.scalar(select(OutboxItem.id).where(OutboxItem.dedup_key == dedup_key))
    else:
        session.info.setdefault("outbox_ids", []).append(item_id)
    assert item_id is not None
    return item_id


def queue_whatsapp_text(
    session: Session,
    *,
    client_id: uuid.UUID,
    conversation_id: uuid.UUID,
    text: str,
    phone: str | None = None,
    role: MessageRole = MessageRole.ASSISTANT,
    turn_id: uuid.UUID | None = None,
    meta: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    telegram_message_id: int | None = None,
) -> uuid.UUID:
    """Queue a WhatsApp text to the conversation's customer: the message is stored and its outbox item written
    in the caller's transaction (split at 4096 characters). `phone`: the customer's, when the caller has it at
    hand, else read from the conversation. `telegram_message_id`: a manager's reply from that Telegram message,
    confirmed in the customer's topic once delivered."""
    if phone is None:
        phone = session.scalar(
            select(User.phone).join(Conversation, Conversation.user_id == User.id).where(Conversation.id == conversation_id)
        )
        assert phone is not None
    message_id = uuid.uuid4()
    session.execute(
        insert(Message).values(
            id=message_id,
            client_id=client_id,
            conversation_id=conversation_id,
            role=role,
            type=MessageType.TEXT,
            content=text,
            status=MessageStatus.PENDING,
            turn_id=turn_id,
            meta=meta or {},
        )
    )
    return add(
        session,
        client_id=client_id,
        conversation_id=conversation_id,
        payload=WhatsAppText(phone=phone, parts=split_text(text))
        if telegram_message_id is None
        else ManagerText(phone=phone, parts=split_text(text), telegram_message_id=telegram_message_id),
        dedup_key=dedup_key,
        message_id=message_id,
    )


def written(session: Session) -> list[uuid.UUID]:
    """Items this transaction wrote, in order: deliver them once it has committed."""
    return list(session.info.get("outbox_ids", []))


def deliver(item_id: uuid.UUID, *, client: Client | None = None, phone: str | None = None) -> DeliveryOutcome:
    """Try to deliver one item now. `client` (detached) and the conversation's customer `phone`: when the
    caller has them at hand (the turn that wrote the item), they are not read again."""
    delivery = _claim(item_id, client, phone)
    if delivery is None:
        return DeliveryOutcome.SKIPPED
    handler, payload_type = _handlers.get(delivery.kind), PAYLOAD_TYPES.get(delivery.kind)
    try:
        if handler is None or payload_type is None:
            raise ConfigError(f"no handler for outbox {delivery.channel}/{delivery.kind}")
        delivery = replace(delivery, payload=payload_type.model_validate(delivery.payload))
        with leases.hold("outbox", (delivery.id, delivery.version), _renew_leases):
            result = handler(delivery, lambda progress: _save_progress(delivery, progress))
    except ValidationError as exc:
        return _failed(delivery, f"unreadable payload: {exc.error_count()} error(s)", retryable=False)
    except (ExternalServiceError, ConfigError) as exc:
        if isinstance(exc, ExternalServiceError) and exc.uncertain and delivery.channel == OutboxChannel.WHATSAPP:
            return _uncertain(delivery, str(exc))
        retryable = isinstance(exc, ExternalServiceError) and exc.retryable
        return _failed(delivery, str(exc), retryable=retryable)
    except Exception as exc:  # a bug in a handler must not wedge the item in 'sending'
        logger.exception("outbox.handler_crashed", extra={"outbox_id": str(item_id), "kind": delivery.kind})
        return _failed(delivery, f"{type(exc).__name__}: {exc}", retryable=True)
    # Also over 'uncertain': this sender's claim expired mid-send and the item was marked so, but it did go.
    # The item and its stored message are marked in one statement.
    item = (
        update(OutboxItem)
        .where(_still_mine(delivery), OutboxItem.status.in_((OutboxStatus.SENDING, OutboxStatus.UNCERTAIN)))
        .values(status=OutboxStatus.SENT, sent_at=func.now(), locked_until=None, result=result, last_error=None)
        .returning(OutboxItem.message_id)
        .cte("item")
    )
    message = update(Message).where(Message.id == item.c.message_id).values(status=MessageStatus.SENT).cte("message")
    with db.autocommit() as connection:
        sent = connection.execute(select(func.count()).select_from(item).add_cte(message)).scalar()
    if not sent:  # taken over by another sender (this one stalled past its lease), or deleted with its client
        logger.warning("outbox.lease_lost", extra={"outbox_id": str(item_id), "kind": delivery.kind, "version": delivery.version})
        return DeliveryOutcome.SKIPPED
    logger.info(
        "outbox.sent", extra={"outbox_id": str(item_id), "channel": delivery.channel, "kind": delivery.kind, "attempt": delivery.attempts}
    )
    return DeliveryOutcome.SENT


def deliver_soon(item_id: uuid.UUID) -> None:
    """Hand an item to a worker now; if the queue is unreachable the maintenance sweep sends it."""
    try:
        queue.enqueue(Job.DELIVER_OUTBOX, str(item_id))
    except redis.RedisError:
        logger.warning("outbox.enqueue_failed", extra={"outbox_id": str(item_id)})


def redrive(limit: int = 200) -> int:
    """Re-queue items that are due (a retry whose job was lost, or a Telegram sender that died mid-send), and
    settle the WhatsApp sends whose sender died mid-send as uncertain. A periodic task."""
    for item_id in _abandoned_sends(limit):
        delivery = _read(item_id, status=OutboxStatus.SENDING)
        if delivery is not None:
            _uncertain(delivery, "the sender stopped while the message was being sent (its lease expired)")
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(OutboxItem.id)
                .where(
                    or_(
                        (OutboxItem.status == OutboxStatus.PENDING) & (OutboxItem.next_attempt_at <= text("now() - interval '5 seconds'")),
                        _retry_abandoned(),
                    )
                )
                .order_by(OutboxItem.created_at)
                .limit(limit)
            )
        )
    for item_id in ids:
        queue.enqueue(Job.DELIVER_OUTBOX, str(item_id))
    return len(ids)


def _abandoned() -> Any:
    return (OutboxItem.status == OutboxStatus.SENDING) & (OutboxItem.locked_until < func.now())


def _retry_abandoned() -> Any:
    """A sender died mid-send: its item is sent again, unless a repeat would reach a customer twice."""
    return _abandoned() & (OutboxItem.channel != OutboxChannel.WHATSAPP)


def _abandoned_sends(limit: int) -> list[uuid.UUID]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(OutboxItem.id)
                .where(_abandoned(), OutboxItem.channel == OutboxChannel.WHATSAPP)
                .order_by(OutboxItem.created_at)
                .limit(limit)
            )
        )


def _renew_leases(connection: Connection, keys: list[Any]) -> set[Any]:
    """The heartbeat's renewal of this process's claims on items: those still held, by (id, version)."""
    rows = connection.execute(
        update(OutboxItem)
        .where(tuple_(OutboxItem.id, OutboxItem.lease_version).in_(keys), OutboxItem.status == OutboxStatus.SENDING)
        .values(locked_until=func.now() + timedelta(seconds=settings.lease_seconds))
        .returning(OutboxItem.id, OutboxItem.lease_version)
    )
    kept = {(row.id, row.lease_version) for row in rows}
    if len(kept) < len(keys):  # an item finished by its own sender meanwhile (same version) was not lost
        finished = select(OutboxItem.id, OutboxItem.lease_version).where(
            tuple_(OutboxItem.id, OutboxItem.lease_version).in_(keys), OutboxItem.status != OutboxStatus.SENDING
        )
        kept |= {(row.id, row.lease_version) for row in connection.execute(finished)}
    return kept


def _still_mine(delivery: Delivery[Any]) -> Any:
    return (OutboxItem.id == delivery.id) & (OutboxItem.lease_version == delivery.version)


_CLAIMED = (
    OutboxItem.id,
    OutboxItem.channel,
    OutboxItem.kind,
    OutboxItem.payload,
    OutboxItem.result,
    OutboxItem.attempts,
    OutboxItem.client_id,
    OutboxItem.conversation_id,
    OutboxItem.lease_version,
)


def _claim(item_id: uuid.UUID, client: Client | None = None, phone: str | None = None) -> Delivery[Any] | None:
    """Take the item if it is due (its payload still the stored JSON: deliver() reads it by kind). Its client
    and customer's phone are read in the claim's transaction (a failed read leaves the item unclaimed), unless
    the caller gives them: then the claim is one statement."""
    now = func.now()
    claim = (
        update(OutboxItem)
        .where(
            OutboxItem.id == item_id,
            or_((OutboxItem.status == OutboxStatus.PENDING) & (OutboxItem.next_attempt_at <= now), _retry_abandoned()),
        )
        .values(
            status=OutboxStatus.SENDING,
            attempts=OutboxItem.attempts + 1,
            locked_until=now + timedelta(seconds=settings.lease_seconds),
            lease_owner=leases.owner(),
            lease_version=OutboxItem.lease_version + 1,
        )
        .returning(*_CLAIMED)
    )
    if client is None:
        with session_scope() as session:
            item = session.execute(claim).first()
            return _read_delivery(session, item) if item is not None else None
    with db.autocommit() as connection:
        item = connection.execute(claim).first()
    if item is None:
        return None
    assert item.client_id == client.id, "deliver(client=) is given the item's own client"
    return _delivery(item, client, phone)


def _read(item_id: uuid.UUID, *, status: OutboxStatus) -> Delivery[Any] | None:
    """The item as its last sender claimed it, if it is still in `status`."""
    with session_scope() as session:
        item = session.scalar(select(OutboxItem).where(OutboxItem.id == item_id, OutboxItem.status == status))
        return _read_delivery(session, item) if item is not None else None


def _delivery(item: Any, client: Client, phone: str | None) -> Delivery[Any]:
    """A claimed item (a row or an OutboxItem) with its client and its conversation's customer's phone."""
    fields = (item.id, item.channel, item.kind, dict(item.payload), dict(item.result or {}), item.attempts)
    return Delivery(*fields, client, phone, item.conversation_id, item.lease_version)


def _read_delivery(session: Session, item: Any) -> Delivery[Any]:
    client = session.get(Client, item.client_id)
    assert client is not None
    phone = None
    if item.conversation_id:
        phone = session.scalar(
            select(User.phone).join(Conversation, Conversation.user_id == User.id).where(Conversation.id == item.conversation_id)
        )
    session.expunge(client)
    return _delivery(item, client, phone)


def _save_progress(delivery: Delivery[Any], progress: dict[str, Any]) -> None:
    with session_scope() as session:
        session.execute(update(OutboxItem).where(_still_mine(delivery)).values(result=progress))


def _uncertain(delivery: Delivery[Any], error: str) -> DeliveryOutcome:
    """The send may have been delivered: recorded as such (never repeated), and a person told."""
    with session_scope() as session:
        marked = session.execute(
            update(OutboxItem)
            .where(_still_mine(delivery), OutboxItem.status == OutboxStatus.SENDING)
            .values(status=OutboxStatus.UNCERTAIN, locked_until=None, last_error=error[:1000])
            .returning(OutboxItem.id)
        ).first()
    if marked is None:  # settled meanwhile (sent after all, or by another sweep)
        return DeliveryOutcome.SKIPPED
    metrics.outbox_failed.labels(delivery.client.slug, delivery.channel).inc()
    logger.error(
        "outbox.uncertain",
        extra={
            "outbox_id": str(delivery.id),
            "channel": delivery.channel,
            "kind": delivery.kind,
            "attempt": delivery.attempts,
            "conversation_id": str(delivery.conversation_id),
            "client": delivery.client.slug,
            "error": error[:300],
        },
    )
    for listener in _uncertain_listeners:
        try:
            if listener(delivery, error):
                break
        except Exception:
            logger.exception("outbox.listener_failed", extra={"outbox_id": str(delivery.id)})
    return DeliveryOutcome.UNCERTAIN


def _failed(delivery: Delivery[Any], error: str, *, retryable: bool) -> DeliveryOutcome:
    give_up = not retryable or delivery.attempts >= settings.outbox_max_attempts
    delay = _BACKOFF_SECONDS[min(delivery.attempts - 1, len(_BACKOFF_SECONDS) - 1)]
    with session_scope() as session:
        item = session.get(OutboxItem, delivery.id)
        if item is None or item.lease_version != delivery.version or item.status != OutboxStatus.SENDING:
            logger.warning("outbox.lease_lost", extra={"outbox_id": str(delivery.id), "kind": delivery.kind, "version": delivery.version})
            return DeliveryOutcome.SKIPPED
        item.last_error, item.locked_until = error[:1000], None
        if give_up:
            item.status = OutboxStatus.FAILED
            if item.message_id:
                session.execute(update(Message).where(Message.id == item.message_id).values(status=MessageStatus.FAILED))
        else:
            item.status = OutboxStatus.PENDING
            item.next_attempt_at = db.now(session) + timedelta(seconds=delay)
    extra = {
        "outbox_id": str(delivery.id),
        "channel": delivery.channel,
        "kind": delivery.kind,
        "attempt": delivery.attempts,
        "error": error[:300],
    }
    if give_up:
        metrics.outbox_failed.labels(delivery.client.slug, delivery.channel).inc()
        logger.error("outbox.gave_up", extra={**extra, "conversation_id": str(delivery.conversation_id), "client": delivery.client.slug})
        for listener in _gave_up_listeners:
            try:
                listener(delivery, error)
            except Exception:
                logger.exception("outbox.listener_failed", extra={"outbox_id": str(delivery.id)})
        return DeliveryOutcome.FAILED
    logger.warning("outbox.retry_scheduled", extra={**extra, "delay_seconds": delay})
    # Without Redis the maintenance sweep re-drives due items.
    with contextlib.suppress(redis.RedisError):
        queue.enqueue(Job.DELIVER_OUTBOX, str(delivery.id), delay_seconds=delay)
    return DeliveryOutcome.RETRY


def remember_echo(client_id: uuid.UUID, phone: str, text: str, message_id: str | None) -> None:
    """Note what we sent, so the gateway's echo of it is recognised and never answered."""
    try:
        pipe = redis_client.pipeline(transaction=False)
        pipe.set(f"echo:{client_id}:{phone}:{_digest(text)}", 1, ex=600)
        if message_id:
            pipe.set(f"echo:{client_id}:id:{message_id}", 1, ex=_ECHO_TTL_SECONDS)
        pipe.execute()
    except redis.RedisError:
        logger.warning("outbox.echo_not_recorded", extra={"client_id": str(client_id)})


def is_echo(client_id: uuid.UUID, phone: str, text: str, message_id: str) -> bool:
    """Whether a fromMe message is the gateway echoing one of our own sends. Without Redis the outbox itself
    is asked: taking our own echo for a staff reply would mute the bot."""
    try:
        found = redis_client.exists(f"echo:{client_id}:id:{message_id}", f"echo:{client_id}:{phone}:{_digest(text)}")
        return bool(found)
    except redis.RedisError:
        return _sent_recently(client_id, phone, text.strip(), message_id)


def _sent_recently(client_id: uuid.UUID, phone: str, text: str, message_id: str) -> bool:
    with session_scope() as session:
        found = session.scalar(
            select(OutboxItem.id)
            .join(Conversation, Conversation.id == OutboxItem.conversation_id)
            .join(User, User.id == Conversation.user_id)
            .where(
                User.client_id == client_id,
                User.phone == phone,
                OutboxItem.channel == OutboxChannel.WHATSAPP,
                OutboxItem.created_at > func.now() - timedelta(seconds=_ECHO_TTL_SECONDS),
                or_(OutboxItem.payload["parts"].contains([text]), OutboxItem.result["message_ids"].contains([message_id])),
            )
            .limit(1)
        )
    return found is not None


def _digest(text: str) -> str:
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


def deliver_whatsapp_text(delivery: Delivery[WhatsAppText], save_progress: SaveProgress) -> dict[str, Any]:
    """Send the parts in order, recording each, so a retry resumes after the last part delivered."""
    phone = delivery.payload.phone or delivery.phone
    if not phone:
        raise ConfigError("outbox item has no phone to send to")
    creds = whatsapp.credentials_for(delivery.client)
    sent_ids: list[str | None] = list(delivery.result.get("message_ids", []))
    parts = delivery.payload.parts
    for part in parts[len(sent_ids) :]:
        message_id = whatsapp.send_text(creds=creds, phone=phone, text=part)
        remember_echo(delivery.client.id, phone, part, message_id)
        sent_ids.append(message_id)
        if len(sent_ids) < len(parts):  # the last part is recorded with the item's "sent" in deliver()
            save_progress({"message_ids": sent_ids})
    return {"message_ids": sent_ids}
