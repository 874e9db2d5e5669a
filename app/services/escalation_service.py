"""The handover lifecycle: open one when a human is needed, and keep the conversation in step with it."""

import logging
import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Conversation, Handover, HandoverEvent
from app.models.handover import OPEN_HANDOVER_STATUSES
from app.services import state_machine

logger = logging.getLogger(__name__)


def open_handover(session: Session, conversation_id: uuid.UUID) -> Handover | None:
    return session.scalar(select(Handover).where(Handover.conversation_id == conversation_id, Handover.status.in_(OPEN_HANDOVER_STATUSES)))


def escalate(session: Session, *, conversation: Conversation, reason: str) -> tuple[Handover, bool]:
    """Open a pending handover (or return the open one) and mute the bot. Returns (handover, created)."""
    existing = open_handover(session, conversation.id)
    if existing is not None:
        return existing, False
    handover = Handover(client_id=conversation.client_id, conversation_id=conversation.id, status="pending", reason=reason)
    try:
        with session.begin_nested():
            session.add(handover)
            session.flush()
    except IntegrityError:
        # Another turn opened one at the same moment; the partial unique index kept it to one.
        existing = open_handover(session, conversation.id)
        assert existing is not None
        return existing, False
    apply_status(conversation, "pending")
    session.add(HandoverEvent(handover_id=handover.id, action="created", actor_name=reason))
    logger.info("handover.created", extra={"handover_id": str(handover.id), "conversation_id": str(conversation.id), "reason": reason})
    return handover, True


def transition(session: Session, *, handover: Handover, conversation: Conversation, target: str, now: datetime) -> None:
    """Move a handover to `target` (checked by the state machine) and bring the conversation along."""
    state_machine.check_transition(handover.status, target)
    handover.status = target
    handover.last_activity_at = now
    if target == "active":
        handover.taken_at = now
    elif target in ("resolved", "bot_handling", "timeout"):
        handover.resolved_at = now
    apply_status(conversation, target)


def apply_status(conversation: Conversation, handover_status: str) -> None:
    state, bot_status = state_machine.CONVERSATION_FOR_HANDOVER[handover_status]
    conversation.state = state
    conversation.bot_status = bot_status
    conversation.bot_muted_until = None
