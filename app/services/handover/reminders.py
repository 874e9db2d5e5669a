"""Pending handovers nobody takes: a reminder in the topic, an urgent one tagging the owner, then an honest
auto-close that gives the customer the bot back. Timed from the handover's last activity, per client
(reminder_minutes, urgent_reminder_minutes, auto_close_minutes). A periodic maintenance task.
"""

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import Client, Conversation, Handover, HandoverAction, HandoverEvent, HandoverStatus
from app.services import clients, replies
from app.services.channels import outbox
from app.services.handover import lifecycle, topics

logger = logging.getLogger(__name__)

_REMINDER_ACTIONS = {1: HandoverAction.REMINDER_1, 2: HandoverAction.REMINDER_2}


def check_pending(now: datetime | None = None) -> int:
    """Remind about pending handovers nobody took, then close them and give the customer the bot back."""
    done = 0
    with session_scope() as session:
        now = now or db.now(session)
        rows = session.execute(
            select(Handover, Client).join(Client, Client.id == Handover.client_id).where(Handover.status == HandoverStatus.PENDING)
        ).all()
        for handover, client in rows:
            settings_ = clients.settings_of(client)
            idle = now - handover.last_activity_at
            if idle >= timedelta(minutes=settings_.auto_close_minutes):
                done += _auto_close(session, handover, now)
            elif idle >= timedelta(minutes=settings_.urgent_reminder_minutes) and handover.reminders_sent < 2:
                owner = f" @{settings_.owner_username.lstrip('@')}" if settings_.owner_username else ""
                done += _remind(session, handover, f"🔴 <b>Срочно:</b> клиент ждёт менеджера уже {_minutes(idle)} мин.{owner}", level=2)
            elif idle >= timedelta(minutes=settings_.reminder_minutes) and handover.reminders_sent < 1:
                done += _remind(session, handover, f"⏰ Клиент ждёт менеджера уже {_minutes(idle)} мин. Нажмите «Взять».", level=1)
    return done


def _remind(session: Session, handover: Handover, text: str, *, level: int) -> int:
    claimed = session.scalar(
        update(Handover)
        .where(Handover.id == handover.id, Handover.reminders_sent < level, Handover.status == HandoverStatus.PENDING)
        .values(reminders_sent=level)
        .returning(Handover.id)
    )
    if claimed is None:
        return 0
    topics.queue_text(
        session, client_id=handover.client_id, conversation_id=handover.conversation_id, text=text, reply_to=handover.telegram_message_id
    )
    session.add(HandoverEvent(handover_id=handover.id, action=_REMINDER_ACTIONS[level]))
    logger.info("handover.reminded", extra={"handover_id": str(handover.id), "level": level})
    return 1


def _auto_close(session: Session, handover: Handover, now: datetime) -> int:
    locked = session.scalar(
        select(Handover).where(Handover.id == handover.id, Handover.status == HandoverStatus.PENDING).with_for_update(skip_locked=True)
    )
    if locked is None:
        return 0
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    lifecycle.transition(session, handover=locked, conversation=conversation, target=HandoverStatus.TIMEOUT, now=now)
    session.add(HandoverEvent(handover_id=locked.id, action=HandoverAction.TIMEOUT))
    topics.queue_card(session, locked)
    outbox.queue_whatsapp_text(
        session,
        client_id=conversation.client_id,
        conversation_id=conversation.id,
        text=replies.HANDOVER_TIMEOUT,
        meta={"reason": "handover_timeout"},
    )
    logger.info("handover.timeout", extra={"handover_id": str(locked.id), "conversation_id": str(conversation.id)})
    return 1


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)
