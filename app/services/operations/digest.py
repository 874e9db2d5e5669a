"""How the bot did over a period, for the owner: `python -m app.cli report --client S --since D`, and the same
figures every morning in the General topic of the client's Telegram group (the daily digest, about the day
before, at the client's local `digest_time`).

Once per day however many processes tick and across restarts: the digest of a (client, local day) is claimed by
inserting its row (the primary key) in the transaction that queues its outbox item; a day without a customer
message or a handover is claimed and skipped."""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import distinct, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db
from app.db import session_scope
from app.models import Client, DailyDigest, KnowledgeGap, Message, MessageRole, MessageType, OutboxChannel, OutboxItem, OutboxStatus
from app.schemas.client import ClientSettings
from app.schemas.outbox import Digest
from app.services.channels import outbox, telegram
from app.services.channels.outbox import Delivery, SaveProgress
from app.services.handover import report
from app.services.handover.report import HandoverReport
from app.services.knowledge import gaps
from app.services.knowledge.gaps import GapGroup

logger = logging.getLogger(__name__)

TOP_QUESTIONS = 5
# The reason stored with the bot's reply to "stop writing to me" (reply_policy.Action.OPT_OUT), and the source of
# a staff member's message from the business phone (inbound.py): both mute the bot.
_OPT_OUT = "opt_out"
_BUSINESS_PHONE = "business_phone"
_OUTCOMES = (
    ("resolved", "решено"),
    ("returned", "возвращено боту"),
    ("cancelled", "клиент передумал"),
    ("untaken", "никто не взял"),
    ("silent", "закрыто по тишине"),
    ("open", "ещё открыто"),
)


@dataclass(frozen=True)
class Figures:
    """A client's period, as the owner reads it."""

    client: str
    timezone: str
    start: datetime
    end: datetime
    conversations: int  # with at least one customer message
    customer_messages: int
    voice_notes: int
    bot_replies: int
    unanswered: int  # questions the knowledge base had nothing for
    opt_outs: int  # customers who asked the bot to stop (it is muted for them)
    staff_mutes: int  # conversations where staff wrote from the business phone (the bot stepped back)
    undelivered_to_customers: int
    undelivered_to_managers: int
    handovers: HandoverReport
    top_questions: list[GapGroup] = field(default_factory=list)

    @property
    def traffic(self) -> bool:
        return self.customer_messages > 0 or self.handovers.total > 0


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """A local day as the moments it starts and ends."""
    zone = ZoneInfo(timezone)
    return datetime.combine(day, time(), zone), datetime.combine(day + timedelta(days=1), time(), zone)


def figures(session: Session, *, client: Client, start: datetime, end: datetime) -> Figures:
    """The client's figures of [start, end)."""
    in_period = (Message.client_id == client.id, Message.created_at >= start, Message.created_at < end)
    customer = (*in_period, Message.role == MessageRole.USER)
    conversations, customer_messages, voice_notes = session.execute(
        select(
            func.count(distinct(Message.conversation_id)),
            func.count(),
            func.count().filter(Message.type == MessageType.AUDIO),
        ).where(*customer)
    ).one()
    bot_replies, opt_outs = session.execute(
        select(func.count(), func.count().filter(Message.meta["reason"].astext == _OPT_OUT)).where(
            *in_period, Message.role == MessageRole.ASSISTANT
        )
    ).one()
    staff_mutes = session.scalar(
        select(func.count(distinct(Message.conversation_id))).where(
            *in_period, Message.role == MessageRole.MANAGER, Message.meta["source"].astext == _BUSINESS_PHONE
        )
    )
    unanswered = session.scalar(
        select(func.count()).where(KnowledgeGap.client_id == client.id, KnowledgeGap.created_at >= start, KnowledgeGap.created_at < end)
    )
    undelivered = dict(
        session.execute(
            select(OutboxItem.channel, func.count())
            .where(
                OutboxItem.client_id == client.id,
                OutboxItem.status == OutboxStatus.FAILED,
                OutboxItem.created_at >= start,
                OutboxItem.created_at < end,
            )
            .group_by(OutboxItem.channel)
        ).all()
    )
    timezone = ClientSettings.from_stored(client.settings).timezone
    return Figures(
        client=client.name,
        timezone=timezone,
        start=start.astimezone(ZoneInfo(timezone)),
        end=end.astimezone(ZoneInfo(timezone)),
        conversations=int(conversations),
        customer_messages=int(customer_messages),
        voice_notes=int(voice_notes),
        bot_replies=int(bot_replies),
        unanswered=int(unanswered or 0),
        opt_outs=int(opt_outs),
        staff_mutes=int(staff_mutes or 0),
        undelivered_to_customers=int(undelivered.get(OutboxChannel.WHATSAPP, 0)),
        undelivered_to_managers=int(undelivered.get(OutboxChannel.TELEGRAM, 0)),
        handovers=report.handovers(session, client_id=client.id, since=start, until=end),
        top_questions=gaps.groups(session, client_id=client.id, since=start, until=end)[:TOP_QUESTIONS],
    )


def render(f: Figures, *, title: str) -> str:
    """The figures as the owner reads them (plain text)."""
    lines = [
        f"{title} — {f.client}",
        f"{f.start:%d.%m.%Y %H:%M} – {f.end:%d.%m.%Y %H:%M} ({f.timezone})",
        "",
        f"Диалогов: {f.conversations}, сообщений клиентов: {f.customer_messages}, из них голосовых: {f.voice_notes}",
        f"Ответов бота: {f.bot_replies}; вопросов без ответа в базе знаний: {f.unanswered}",
    ]
    h = f.handovers
    if h.total:
        outcomes = ", ".join(f"{label} {h.by_outcome[key]}" for key, label in _OUTCOMES if h.by_outcome.get(key))
        lines.append(f"Передано менеджерам: {h.total} ({outcomes})")
        if h.take_median_minutes is not None:
            lines.append(f"Время до взятия менеджером (взято {h.taken}): медиана {_minutes(h.take_median_minutes)}")
    else:
        lines.append("Передано менеджерам: 0")
    lines.append(f"Бот замолчал: клиент попросил не писать — {f.opt_outs}, сотрудник ответил с телефона — {f.staff_mutes}")
    if f.undelivered_to_customers or f.undelivered_to_managers:
        lines.append(f"⚠️ Не доставлено: клиентам {f.undelivered_to_customers}, в Telegram {f.undelivered_to_managers}")
    else:
        lines.append("Не доставлено: 0")
    if f.top_questions:
        lines += ["", "Частые вопросы без ответа:"]
        lines += [f"{n}. {_short(g.question)} — {g.count}" for n, g in enumerate(f.top_questions, start=1)]
    return "\n".join(lines)


def as_json(f: Figures) -> dict[str, Any]:
    """The figures for `report --json`."""
    h = f.handovers
    return {
        "client": f.client,
        "timezone": f.timezone,
        "start": f.start.isoformat(),
        "end": f.end.isoformat(),
        "conversations": f.conversations,
        "customer_messages": f.customer_messages,
        "voice_notes": f.voice_notes,
        "bot_replies": f.bot_replies,
        "unanswered": f.unanswered,
        "mutes": {"opt_outs": f.opt_outs, "staff": f.staff_mutes},
        "undelivered": {"customers": f.undelivered_to_customers, "telegram": f.undelivered_to_managers},
        "handovers": {
            "total": h.total,
            "by_outcome": h.by_outcome,
            "by_reason": h.by_reason,
            "taken": h.taken,
            "take_median_minutes": h.take_median_minutes,
        },
        "top_unanswered": [{"question": g.question, "count": g.count, "examples": g.examples} for g in f.top_questions],
    }


def _minutes(value: float) -> str:
    return f"{value:.0f} мин" if value < 120 else f"{value / 60:.1f} ч"


def _short(text: str, limit: int = 150) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- the daily digest ----------------------------------------------------------------------------------


def send_due(now: datetime | None = None) -> int:
    """Queue and deliver the digest of every client whose local digest time has passed today and whose digest of
    yesterday was not claimed yet (a periodic task). Returns how many were sent."""
    with session_scope() as session:
        now = now or db.now(session)
        candidates = session.execute(select(Client.id, Client.settings).where(Client.is_active, Client.telegram_chat_id.is_not(None))).all()
        recent = select(DailyDigest.client_id, DailyDigest.day).where(DailyDigest.day >= now.date() - timedelta(days=2))
        claimed = {(client_id, day) for client_id, day in session.execute(recent)}
    due = []
    for client_id, stored in candidates:
        own = ClientSettings.from_stored(stored)
        local = now.astimezone(ZoneInfo(own.timezone))
        day = local.date() - timedelta(days=1)
        if own.digest_enabled and local.strftime("%H:%M") >= own.digest_time and (client_id, day) not in claimed:
            due.append((client_id, day, own.timezone))
    sent = 0
    for client_id, day, timezone in due:
        try:
            sent += _send(client_id, day, timezone)
        except Exception as exc:  # one client's failure must not hold up the others' digests
            logger.error("digest.failed", extra={"client_id": str(client_id), "day": day.isoformat(), "error_type": type(exc).__name__})
    return sent


def _send(client_id: uuid.UUID, day: date, timezone: str) -> bool:
    """Claim the (client, day) digest and queue it in the same transaction; False when another process had it or
    there was no traffic."""
    start, end = day_bounds(day, timezone)
    with session_scope() as session:
        first = session.scalar(insert(DailyDigest).values(client_id=client_id, day=day).on_conflict_do_nothing().returning(DailyDigest.day))
        if first is None:
            return False
        client = session.get(Client, client_id)
        assert client is not None
        found = figures(session, client=client, start=start, end=end)
        if not found.traffic:
            logger.info("digest.skipped", extra={"client": client.slug, "day": day.isoformat(), "reason": "no traffic"})
            return False
        text = telegram.escape(render(found, title=f"📊 Сводка за {day:%d.%m.%Y}"))
        item_id = outbox.add(
            session, client_id=client_id, conversation_id=None, payload=Digest(day=day, text=text), dedup_key=f"digest:{client_id}:{day}"
        )
        session.execute(update(DailyDigest).where(DailyDigest.client_id == client_id, DailyDigest.day == day).values(outbox_id=item_id))
        logger.info("digest.queued", extra={"client": client.slug, "day": day.isoformat(), "outbox_id": str(item_id)})
    outbox.deliver(item_id)
    return True


def deliver(delivery: Delivery[Digest], save_progress: SaveProgress) -> dict[str, Any]:
    """The outbox handler: the digest into the General topic of the client's group."""
    client = delivery.client
    ids = telegram.send_long(telegram.bot_for(client), chat_id=telegram.chat_for(client), text=delivery.payload.text)
    return {"message_ids": ids}
