"""Every open handover ends. A periodic maintenance task (check_open) reads each open handover's stored
timestamps and decides; each notice records when it went (a counter, or a `*_sent_at`), so a restart between
two checks neither loses nor repeats one. All clocks count working minutes only (the client's business
hours, services/hours.py), per client:

| handover | clock starts                                   | notice                                                       |
|----------|------------------------------------------------|--------------------------------------------------------------|
| pending  | when it opened (the customer writing again     | reminder_minutes: a reminder in the topic;                   |
|          | does not push it back)                         | urgent_reminder_minutes: urgent, tagging the owner;          |
|          |                                                | auto_close_minutes: closed (untaken), the customer told      |
| taken    | the customer's last message unanswered (counted | active_reminder_minutes: the assignee reminded;             |
|          | from the take at the earliest)                 | active_urgent_minutes: urgent, tagging the owner             |
|          | the last message of either side                | active_auto_close_minutes: the bot back (silent), customer   |
|          |                                                | told honestly, the card marked                               |

A taken handover's reminders are once per unanswered message: a manager's reply ends the wait, the
customer's next message starts a new one.
"""

import html
import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app import db
from app.db import session_scope
from app.models import (
    OPEN_HANDOVER_STATUSES,
    Client,
    Conversation,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverOutcome,
    HandoverStatus,
    Message,
    MessageRole,
)
from app.schemas.client import ClientSettings
from app.services import clients, hours, replies
from app.services.channels import outbox
from app.services.handover import lifecycle, topics

logger = logging.getLogger(__name__)

_REMINDER_ACTIONS = {1: HandoverAction.REMINDER_1, 2: HandoverAction.REMINDER_2}


def check_open(now: datetime | None = None) -> int:
    """Remind about, and close, the open handovers whose clocks have run out; returns how many notices went."""
    done = 0
    with session_scope() as session:
        now = now or db.now(session)
        rows = session.execute(
            select(Handover, Client).join(Client, Client.id == Handover.client_id).where(Handover.status.in_(OPEN_HANDOVER_STATUSES))
        ).all()
        for handover, client in rows:
            settings_ = clients.settings_of(client)
            schedule = hours.schedule_of(settings_)
            if handover.status == HandoverStatus.PENDING:
                done += _check_pending(session, handover, settings_, schedule, now)
            else:
                done += _check_taken(session, handover, settings_, schedule, now)
    return done


def _check_pending(session: Session, handover: Handover, settings_: ClientSettings, schedule: hours.Schedule, now: datetime) -> int:
    waited = hours.working_minutes(schedule, handover.created_at, now)
    if waited >= settings_.auto_close_minutes:
        return _auto_close(session, handover, now, outcome=HandoverOutcome.UNTAKEN, text=replies.HANDOVER_TIMEOUT)
    level = 2 if waited >= settings_.urgent_reminder_minutes else 1 if waited >= settings_.reminder_minutes else 0
    if level <= handover.reminders_sent:
        return 0
    since = _since(schedule, handover.created_at, now, waited)
    more = _customer_messages_since(session, handover)
    wrote = f" Клиент написал ещё {more} сообщ." if more else ""
    if level == 2:
        text = f"🔴 <b>Срочно:</b> клиент ждёт менеджера {since}.{wrote}{_owner(settings_)}"
    else:
        text = f"⏰ Клиент ждёт менеджера {since}.{wrote} Нажмите «Взять»."
    claimed = session.scalar(
        update(Handover)
        .where(Handover.id == handover.id, Handover.reminders_sent < level, Handover.status == HandoverStatus.PENDING)
        .values(reminders_sent=level)
        .returning(Handover.id)
    )
    if claimed is None:
        return 0
    return _notify(session, handover, text, _REMINDER_ACTIONS[level])


def _check_taken(session: Session, handover: Handover, settings_: ClientSettings, schedule: hours.Schedule, now: datetime) -> int:
    taken = handover.taken_at or handover.created_at
    customer, manager = handover.last_customer_message_at, handover.last_manager_reply_at
    unanswered = customer is not None and (manager is None or customer > manager)
    last_word = max(t for t in (taken, customer, manager) if t is not None)
    if hours.working_minutes(schedule, last_word, now) >= settings_.active_auto_close_minutes:
        text = replies.HANDOVER_CLOSED_UNANSWERED if unanswered else replies.HANDOVER_CLOSED_QUIET
        return _auto_close(session, handover, now, outcome=HandoverOutcome.SILENT, text=text)
    if not unanswered or customer is None:
        return 0
    since = max(customer, taken)
    waited = hours.working_minutes(schedule, since, now)
    urgent_done = handover.active_urgent_sent_at is not None and handover.active_urgent_sent_at >= since
    reminded = handover.active_reminder_sent_at is not None and handover.active_reminder_sent_at >= since
    assignee = _mention(handover)
    when = _since(schedule, since, now, waited)
    if waited >= settings_.active_urgent_minutes and not urgent_done:
        text = f"🔴 <b>Срочно:</b> клиент без ответа {when}. {assignee}{_owner(settings_)}"
        return _claim_active(session, handover, Handover.active_urgent_sent_at, since, now, text, HandoverAction.ACTIVE_URGENT)
    if waited >= settings_.active_reminder_minutes and not reminded and not urgent_done:
        text = f"⏰ {assignee}, клиент ждёт ответа {when}."
        return _claim_active(session, handover, Handover.active_reminder_sent_at, since, now, text, HandoverAction.ACTIVE_REMINDER)
    return 0


def _claim_active(
    session: Session,
    handover: Handover,
    column: InstrumentedAttribute[datetime | None],
    since: datetime,
    now: datetime,
    text: str,
    action: HandoverAction,
) -> int:
    """Record the notice for this wait (a conditional update: one sender wins) and queue it."""
    claimed = session.scalar(
        update(Handover)
        .where(Handover.id == handover.id, Handover.status == HandoverStatus.ACTIVE, or_(column.is_(None), column < since))
        .values({column.key: now})
        .returning(Handover.id)
    )
    if claimed is None:
        return 0
    return _notify(session, handover, text, action)


def _notify(session: Session, handover: Handover, text: str, action: HandoverAction) -> int:
    topics.queue_text(
        session, client_id=handover.client_id, conversation_id=handover.conversation_id, text=text, reply_to=handover.telegram_message_id
    )
    session.add(HandoverEvent(handover_id=handover.id, action=action))
    logger.info("handover.reminded", extra={"handover_id": str(handover.id), "action": action})
    return 1


def _auto_close(session: Session, handover: Handover, now: datetime, *, outcome: HandoverOutcome, text: str) -> int:
    locked = session.scalar(
        select(Handover).where(Handover.id == handover.id, Handover.status == handover.status).with_for_update(skip_locked=True)
    )
    if locked is None:
        return 0
    conversation = session.get(Conversation, handover.conversation_id)
    assert conversation is not None
    lifecycle.transition(session, handover=locked, conversation=conversation, target=HandoverStatus.TIMEOUT, now=now, outcome=outcome)
    session.add(
        HandoverEvent(
            handover_id=locked.id, action=HandoverAction.TIMEOUT if outcome == HandoverOutcome.UNTAKEN else HandoverAction.AUTO_CLOSED
        )
    )
    topics.queue_card(session, locked)
    if outcome == HandoverOutcome.SILENT:
        topics.queue_text(
            session,
            client_id=locked.client_id,
            conversation_id=conversation.id,
            text="⌛ Долго не было сообщений: диалог закрыт автоматически, клиенту снова отвечает бот.",
            reply_to=locked.telegram_message_id,
        )
    outbox.queue_whatsapp_text(
        session, client_id=conversation.client_id, conversation_id=conversation.id, text=text, meta={"reason": f"handover_{outcome}"}
    )
    logger.info("handover.auto_closed", extra={"handover_id": str(locked.id), "conversation_id": str(conversation.id), "outcome": outcome})
    return 1


def _customer_messages_since(session: Session, handover: Handover) -> int:
    """The customer's messages after the one that opened the handover."""
    count = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.conversation_id == handover.conversation_id,
            Message.role == MessageRole.USER,
            Message.created_at > handover.created_at,
        )
    )
    return int(count or 0)


def _since(schedule: hours.Schedule, since: datetime, now: datetime, working: float) -> str:
    """How long someone has waited, as a manager reads it: "уже 35 мин", or since when if the night or a
    day off lies in between ("с 19:50 вчера")."""
    wall = (now - since).total_seconds() / 60
    if wall - working < 1:
        return f"уже {int(working)} мин"
    tz: ZoneInfo = schedule.tz
    local, today = since.astimezone(tz), now.astimezone(tz).date()
    day = "" if local.date() == today else " вчера" if local.date() == today - timedelta(days=1) else f" {local:%d.%m}"
    return f"с {local:%H:%M}{day}"


def _mention(handover: Handover) -> str:
    """The assignee, tagged so Telegram notifies them."""
    name = html.escape(handover.assigned_to or "менеджер", quote=False)
    return f'<a href="tg://user?id={handover.assigned_to_id}">{name}</a>' if handover.assigned_to_id else name


def _owner(settings_: ClientSettings) -> str:
    return f" @{settings_.owner_username.lstrip('@')}" if settings_.owner_username else ""
