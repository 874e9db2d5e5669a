"""A handover's life: opened when a human is needed (once: a repeat request finds the open one), moved
between statuses by the state machine with the conversation following, withdrawn by the customer; and the
bot's mutes (the customer's "stop", staff answering from the business phone).

What managers do with a handover is in manager_actions.py, reminders and auto-close in reminders.py, what
appears in Telegram in card.py and topics.py.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.models import (
    BotStatus,
    Conversation,
    ConversationState,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverOutcome,
    HandoverReason,
    HandoverStatus,
)
from app.schemas.client import ClientSettings
from app.services.handover import state_machine, topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Escalation:
    handover_id: uuid.UUID
    created: bool
    cooldown: bool = False


def open_handover(session: Session, conversation_id: uuid.UUID, *, lock: bool = False) -> Handover | None:
    """The conversation's pending or active handover, if any (at most one: a partial unique index)."""
    query = select(Handover).where(Handover.open_in(conversation_id))
    return session.scalar(query.with_for_update() if lock else query)


def escalate(
    session: Session,
    *,
    conversation: Conversation,
    reason: HandoverReason,
    client_settings: ClientSettings | None = None,
    detail: str | None = None,
) -> Escalation:
    """Open a pending handover and mute the bot, or return the open (or just closed, within cooldown) one.
    Unless a manager opened it, the customer's message that opened it starts the clocks and the customer is
    told (by the caller, in the same transaction)."""
    existing = open_handover(session, conversation.id)
    if existing is not None:
        return Escalation(existing.id, created=False)
    cooldown = client_settings.escalation_cooldown_minutes if client_settings else 0
    if cooldown:
        recent = session.scalar(
            select(Handover)
            .where(Handover.conversation_id == conversation.id, Handover.created_at > func.now() - timedelta(minutes=cooldown))
            .order_by(Handover.created_at.desc())
            .limit(1)
        )
        if recent is not None:
            return Escalation(recent.id, created=False, cooldown=True)
    handover = Handover(
        client_id=conversation.client_id,
        conversation_id=conversation.id,
        status=HandoverStatus.PENDING,
        reason=reason,
        reason_detail=detail[:200] if detail else None,
    )
    if reason != HandoverReason.MANAGER_INITIATED:
        handover.last_customer_message_at = handover.customer_notified_at = db.now(session)
    try:
        with session.begin_nested():
            session.add(handover)
            session.flush()
    except IntegrityError:
        # Another turn opened one at the same moment; the partial unique index kept it to one.
        existing = open_handover(session, conversation.id)
        assert existing is not None
        return Escalation(existing.id, created=False)
    apply_status(conversation, HandoverStatus.PENDING)
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.CREATED, actor_name=reason))
    topics.queue_card(session, handover)
    logger.info("handover.created", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id), "reason": reason})
    return Escalation(handover.id, created=True)


_OUTCOMES = {
    HandoverStatus.RESOLVED: HandoverOutcome.RESOLVED,
    HandoverStatus.BOT_HANDLING: HandoverOutcome.RETURNED,
    HandoverStatus.TIMEOUT: HandoverOutcome.UNTAKEN,
}


def transition(
    session: Session,
    *,
    handover: Handover,
    conversation: Conversation,
    target: HandoverStatus,
    now: datetime,
    outcome: HandoverOutcome | None = None,
) -> None:
    """Move a handover to `target` (checked by the state machine) and bring the conversation along; a closed
    one records its outcome (by default the one its status implies)."""
    state_machine.check_transition(handover.status, target)
    handover.status = target
    handover.last_activity_at = now
    if target == HandoverStatus.ACTIVE:
        handover.taken_at = now
    elif state_machine.is_closed(target):
        handover.resolved_at = now
        handover.outcome = outcome or _OUTCOMES[target]
    apply_status(conversation, target)


def cancel(session: Session, *, handover: Handover, conversation: Conversation) -> None:
    """The customer withdrew the request while waiting ("не надо", "стоп"): close it and tell the managers."""
    transition(
        session,
        handover=handover,
        conversation=conversation,
        target=HandoverStatus.RESOLVED,
        now=db.now(session),
        outcome=HandoverOutcome.CANCELLED,
    )
    session.add(HandoverEvent(handover_id=handover.id, action=HandoverAction.CANCELLED_BY_CUSTOMER))
    topics.queue_card(session, handover)
    topics.queue_text(
        session, client_id=handover.client_id, conversation_id=conversation.id, text="🚫 Клиент отказался от связи с менеджером."
    )
    logger.info("handover.cancelled", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id)})


def mute_for_staff(session: Session, *, conversation_id: uuid.UUID, minutes: int) -> None:
    """A staff member answered from the business phone: the bot steps back for a while (an open handover stays as is)."""
    session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.state == ConversationState.BOT)
        .values(bot_status=BotStatus.MUTED, bot_muted_until=func.now() + timedelta(minutes=minutes))
    )


def mute_for_opt_out(session: Session, *, conversation: Conversation, client_settings: ClientSettings) -> None:
    """The customer asked us to stop: 30 minutes the first time, 24 hours after that (per client)."""
    minutes = client_settings.mute_minutes_first if conversation.mute_count == 0 else client_settings.mute_minutes_repeat
    conversation.bot_status = BotStatus.MUTED
    conversation.bot_muted_until = db.now(session) + timedelta(minutes=minutes)
    conversation.mute_count += 1


def apply_status(conversation: Conversation, handover_status: HandoverStatus) -> None:
    state, bot_status = state_machine.CONVERSATION_FOR_HANDOVER[handover_status]
    conversation.state = state
    conversation.bot_status = bot_status
    conversation.bot_muted_until = None


def customer_wrote(session: Session, conversation_id: uuid.UUID) -> None:
    """The customer wrote while the handover is open: a taken one's clocks count from this message (a pending
    one keeps counting from when it opened: writing again makes the wait no shorter)."""
    session.execute(
        update(Handover).where(Handover.open_in(conversation_id)).values(last_customer_message_at=func.now(), last_activity_at=func.now())
    )


def claim_waiting_notice(session: Session, conversation_id: uuid.UUID, *, minutes: int) -> bool:
    """Record that the waiting customer is told something now, unless they were told within `minutes` (two
    turns at once: one wins)."""
    claimed = session.scalar(
        update(Handover)
        .where(
            Handover.open_in(conversation_id),
            Handover.last_manager_reply_at.is_(None),
            (Handover.customer_notified_at.is_(None)) | (Handover.customer_notified_at <= func.now() - timedelta(minutes=minutes)),
        )
        .values(customer_notified_at=func.now())
        .returning(Handover.id)
    )
    return claimed is not None
