"""Answering a customer's turn: every message that arrived while the customer was writing, answered once.

Runs on the job queue when the turn is due (scheduling.py), under the conversation's turn lease (a row in
turn_leases with an owner and a version, renewed by this process's heartbeat while the turn runs, see
app/leases.py; a turn whose process died is taken over once its lease has expired):

1. take the lease, claim every received message of the conversation, and read what answering needs (one
   transaction);
2. read each message as the customer meant it: voice notes transcribed, notes for files;
3. decide (reply_policy.py): classify the intent, search the client's knowledge, ask the language model
   only when the policy says so; no transaction is open meanwhile;
4. apply the decision in one transaction (reply in the outbox, handover, mute), unless the customer wrote
   again meanwhile (the messages go back and one later turn answers everything) or the lease was taken over
   (its version moved on: the result is dropped, the new owner answers);
5. deliver the outbox items it wrote, and count.
"""

import logging
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Interval, Select, Update, bindparam, exists, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import BindParameter

from app import db, leases, metrics
from app.config import settings
from app.db import session_scope
from app.models import (
    Client,
    Conversation,
    Handover,
    HandoverReason,
    HandoverStatus,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    User,
)
from app.models.turn_lease import TurnLease
from app.schemas.client import ClientSettings
from app.services import clients, hours, replies
from app.services.booking import apply as booking
from app.services.booking import flow, prices
from app.services.booking.catalog import NO_SERVICES, Catalog
from app.services.booking.store import store as booking_store
from app.services.channels import outbox, stt, telegram
from app.services.channels.media import fetch_media
from app.services.conversation import assistant, intent, reply_policy, scheduling, sensitive
from app.services.conversation.assistant import ChatTurn, Handoff
from app.services.conversation.intent import Intent, IntentResult
from app.services.conversation.reply_policy import Action, BotStep, Decision, TurnFacts
from app.services.handover import card, lifecycle, topics
from app.services.knowledge import gaps, kb
from app.services.operations import alerts, limits
from app.services.operations.limits import Limit
from app.utils.errors import ConfigError, ExternalServiceError, MediaRejected

logger = logging.getLogger(__name__)

VOICE_FAILED_NOTE = "[голосовое сообщение: не удалось распознать]"
VOICE_SKIPPED_NOTE = "[голосовое сообщение: не прослушано, лимит распознавания исчерпан]"
# A voice note whose container says nothing of its length is counted as this many bytes a second (32 kbit/s:
# more than WhatsApp's Opus uses, so the estimate errs long)
_UNMEASURED_BYTES_PER_SECOND = 4000
_ATTACHMENTS = (MessageType.IMAGE, MessageType.VIDEO, MessageType.DOCUMENT)
_NOTES = {
    MessageType.IMAGE: "[изображение]",
    MessageType.VIDEO: "[видео]",
    MessageType.DOCUMENT: "[документ]",
    MessageType.LOCATION: "[геолокация]",
    MessageType.CONTACT: "[контакт]",
    MessageType.STICKER: "[стикер]",
}
_HISTORY_STATUSES = (MessageStatus.PROCESSED, MessageStatus.SENT, MessageStatus.PENDING, MessageStatus.IGNORED, MessageStatus.FAILED)
_REDRIVE_GRACE = timedelta(seconds=10)


class TurnOutcome(StrEnum):
    """What became of a turn (the `outcome` of logs and metrics)."""

    ANSWER = "answer"
    ESCALATE = "escalate"
    ESCALATE_REPEAT = "escalate_repeat"  # asked for a manager again while one was already called
    FORWARD = "forward"
    OPT_OUT = "opt_out"
    STORED = "stored"
    SUPERSEDED = "superseded"  # the customer wrote again: a later turn answers everything
    RESCHEDULED = "rescheduled"  # not due yet: dispatched again when it is
    LOCKED = "locked"  # another worker is answering the conversation
    LOST = "lost"  # this worker's lease was taken over (it stalled past LEASE_SECONDS): its result is dropped
    EMPTY = "empty"  # nothing left to answer


_REPLIED = frozenset({TurnOutcome.ANSWER, TurnOutcome.ESCALATE, TurnOutcome.ESCALATE_REPEAT, TurnOutcome.OPT_OUT})


@dataclass(frozen=True)
class TurnPart:
    """One message of the turn as the customer meant it: a transcript for a voice note, a note for a file."""

    message_id: uuid.UUID
    type: MessageType
    text: str
    note: str | None = None
    media: dict[str, Any] | None = None
    failed: bool = False
    skipped: bool = False  # a voice note not transcribed: the client's budget is spent

    @property
    def line(self) -> str:
        return " ".join(piece for piece in (self.note, self.text.strip()) if piece)


@dataclass
class Turn:
    """One customer turn being answered, with what was read about it in the opening transaction."""

    id: uuid.UUID
    version: int  # of the conversation's turn lease: the fencing token of the final write
    conversation_id: uuid.UUID
    client: Client  # detached: read in the opening transaction
    client_settings: ClientSettings
    phone: str
    customer_name: str | None
    messages: list[Message]
    history: list[ChatTurn]
    bot_muted: bool
    handover_status: HandoverStatus | None
    now: datetime  # when the turn opened (the database's clock)
    manager_replied: bool = False  # in the open handover
    notified_at: datetime | None = None  # the waiting customer was last told something
    last_step: BotStep | None = None  # the bot's last message to the customer
    catalog: Catalog = NO_SERVICES  # the client's services list
    booking_id: uuid.UUID | None = None  # the booking request in progress (being collected, or a proposal to answer)
    booking: flow.Draft | None = None
    managers_reachable: bool = True  # the client has a Telegram group and a bot
    parts: list[TurnPart] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def client_id(self) -> uuid.UUID:
        return self.client.id

    @property
    def client_slug(self) -> str:
        return self.client.slug

    @property
    def client_name(self) -> str:
        return self.client.name

    @property
    def prompt(self) -> str:
        return self.client.prompt

    @property
    def policy(self) -> str:
        """The client's rules for the bot."""
        return self.client.policy

    @property
    def customer_text(self) -> str:
        """What the customer wrote or said (transcripts in place of voice notes), in order."""
        return "\n".join(p.text for p in self.parts if p.text.strip())

    @property
    def text(self) -> str:
        """The turn for the model and the manager: the customer's words with notes about attachments."""
        return "\n".join(p.line for p in self.parts if p.line)

    @property
    def schedule(self) -> hours.Schedule:
        return hours.schedule_of(self.client_settings)

    @property
    def guard(self) -> sensitive.Guard:
        return sensitive.guard_for(self.client_settings, self.policy)

    @property
    def facts(self) -> TurnFacts:
        words = bool(self.customer_text)
        schedule = self.schedule
        open_now = hours.is_open(schedule, self.now)
        opens = None if open_now else hours.next_open(schedule, self.now)
        guard = self.guard
        topic = sensitive.find(self.customer_text, guard) if words else None
        return TurnFacts(
            readable=bool(self.text.strip()),
            words=words,
            voice_failed_only=bool(self.parts) and not words and any(p.failed for p in self.parts),
            voice_skipped=any(p.skipped for p in self.parts),
            attachments_only=not words and any(p.type in _ATTACHMENTS for p in self.parts),
            handover=self.handover_status,
            bot_muted=self.bot_muted,
            settings=self.client_settings,
            open_now=open_now,
            opens=replies.opening(opens.astimezone(schedule.tz), self.now.astimezone(schedule.tz)) if opens else None,
            manager_replied=self.manager_replied,
            minutes_since_notice=(self.now - self.notified_at).total_seconds() / 60 if self.notified_at else None,
            last_step=self.last_step,
            answer_to_offer=reply_policy.yes_or_no(self.customer_text) if self.last_step == BotStep.OFFER else None,
            sensitive_topic=topic.label if topic else None,
            guard=guard,
            managers_reachable=self.managers_reachable,
        )

    @property
    def booking_on(self) -> bool:
        """Bookings are collected only when the client wants them and a manager can confirm them."""
        return self.client_settings.booking_enabled and self.managers_reachable

    @property
    def scope(self) -> limits.Scope:
        return limits.Scope(self.client_id, self.client_slug, self.phone, self.client_settings)

    @property
    def log(self) -> dict[str, Any]:
        return {"conversation_id": str(self.conversation_id), "client": self.client_slug, "phone": self.phone, "turn_id": str(self.id)}


def process_turn(conversation_id: uuid.UUID) -> TurnOutcome:
    """Answer the conversation's pending turn once it is due. Returns what happened (for logs and tests)."""
    if scheduling.claim_due(conversation_id) > 0:
        return TurnOutcome.RESCHEDULED  # a later message moved the turn: it is dispatched again when due
    turn = _open_turn(conversation_id)
    if not isinstance(turn, Turn):
        if turn == TurnOutcome.LOCKED:  # another worker is answering this conversation: come back after it
            scheduling.enqueue_turn(conversation_id, delay_seconds=0.5)
        return turn
    with leases.hold("turn", (turn.conversation_id, turn.version), _renew_leases):
        outcome, decision, outbox_ids = _run_turn(turn)
    for outbox_id in outbox_ids:  # each send under a lease of its own
        outbox.deliver(outbox_id, client=turn.client, phone=turn.phone)
    _count(turn, decision, outcome)
    if decision.detail == reply_policy.NO_MANAGER_CHANNEL and outcome == TurnOutcome.ANSWER:
        logger.warning("handover.no_manager_channel", extra={**turn.log, "reason": decision.reason})
        text_ = f"{turn.client_name}: клиенту нужен менеджер, но Telegram-группа или бот клиента не настроены"
        alerts.fire(f"no_manager:{turn.client_slug}", text_)
    return outcome


def _renew_leases(connection: Connection, keys: list[Any]) -> set[Any]:
    """The heartbeat's renewal of this process's turn leases: those still held, by (conversation, version)."""
    rows = connection.execute(
        update(TurnLease)
        .where(tuple_(TurnLease.conversation_id, TurnLease.version).in_(keys), TurnLease.lease_until.is_not(None))
        .values(lease_until=func.now() + timedelta(seconds=settings.lease_seconds))
        .returning(TurnLease.conversation_id, TurnLease.version)
    )
    kept = {(row.conversation_id, row.version) for row in rows}
    if len(kept) < len(keys):  # a lease its own turn released meanwhile (same version, no expiry) was not lost
        released = select(TurnLease.conversation_id, TurnLease.version).where(
            tuple_(TurnLease.conversation_id, TurnLease.version).in_(keys), TurnLease.lease_until.is_(None)
        )
        kept |= {(row.conversation_id, row.version) for row in connection.execute(released)}
    return kept


def _run_turn(turn: Turn) -> tuple[TurnOutcome, Decision, list[uuid.UUID]]:
    try:
        counts = ((Limit.MESSAGES, len(turn.messages)), (Limit.TURNS, 1))
        over = limits.exceeded(counts, turn.scope)
        turn.parts = [_prepare(turn, message, transcribe=not over) for message in turn.messages]
        decision, plan = (reply_policy.flooded(over[0]), _NO_PLAN) if over else _decide(turn)
        decision = _limited(turn, decision)
        outcome, outbox_ids = _finish(turn, decision, plan)
    except Exception:
        _release(turn)  # the job is retried with backoff; the messages must be there to claim again
        raise
    if outcome in (TurnOutcome.SUPERSEDED, TurnOutcome.LOST):  # its messages are counted again by the turn that answers them
        limits.give_back(Limit.MESSAGES, turn.scope, len(turn.messages))
        limits.give_back(Limit.TURNS, turn.scope, 1)
    return outcome, decision, outbox_ids


def _open_turn(conversation_id: uuid.UUID) -> Turn | TurnOutcome:
    """Take the conversation's turn lease, claim every received message of the conversation for this turn,
    and read what answering needs. LOCKED while another live worker holds the lease; EMPTY when nothing
    waits for an answer."""
    turn_id = uuid.uuid4()
    with session_scope() as session:
        version = _take_lease(session, conversation_id, turn_id)
        if version is None:
            return TurnOutcome.LOCKED
        claimed, orphaned = _claim_messages(session, conversation_id, turn_id)
        if orphaned:
            logger.warning("turn.taken_over", extra={"conversation_id": str(conversation_id), "messages": orphaned, "version": version})
        if not claimed:
            _release_lease(session, conversation_id, version)
            return TurnOutcome.EMPTY
        params = {"conversation_id": conversation_id, "turn_id": turn_id, "history": settings.history_messages}
        conversation, client, user, handover, last_reason, history, now = session.execute(_OPENING_READ, params).one()
        client_settings = clients.settings_of(client)
        bookings = booking_store(session)
        in_progress = bookings.in_progress(conversation_id, now=now) if client_settings.booking_enabled else None
        return Turn(
            id=turn_id,
            version=version,
            conversation_id=conversation_id,
            client=client,
            client_settings=client_settings,
            phone=user.phone,
            customer_name=user.name,
            messages=claimed,
            history=_chat_turns(history),
            bot_muted=conversation.bot_muted(now),
            handover_status=handover.status if handover else None,
            now=now,
            manager_replied=handover is not None and handover.last_manager_reply_at is not None,
            notified_at=handover.customer_notified_at if handover else None,
            last_step=BotStep(last_reason) if last_reason in set(BotStep) else None,
            catalog=bookings.catalog(client.id),
            booking_id=in_progress.id if in_progress else None,
            booking=booking.draft_of(in_progress) if in_progress else None,
            managers_reachable=telegram.reachable(client),
        )


# The statements of every turn are built once, with bound parameters: building one anew (and its cache key)
# cost up to 0.6 ms of CPU per call, more than its round trip (the opening read, the lease, the claim).


def _opening_read() -> Select[Any]:
    """Conversation, client, customer, open handover, the bot's last step, the history and the clock."""
    conversation_id: BindParameter[uuid.UUID] = bindparam("conversation_id")
    last_reply = (
        select(Message.meta["reason"].astext)
        .where(Message.conversation_id == conversation_id, Message.role == MessageRole.ASSISTANT)
        .order_by(Message.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    recent = (  # the history: recent messages before this turn
        select(Message.role, Message.content, Message.created_at)
        .where(
            Message.conversation_id == conversation_id,
            Message.role.in_((MessageRole.USER, MessageRole.ASSISTANT, MessageRole.MANAGER)),
            Message.status.in_(_HISTORY_STATUSES),
            (Message.turn_id.is_(None)) | (Message.turn_id != bindparam("turn_id")),
        )
        .order_by(Message.created_at.desc())
        .limit(bindparam("history"))
        .subquery()
    )
    history = select(func.json_agg(aggregate_order_by(func.json_build_array(recent.c.role, recent.c.content), recent.c.created_at)))
    return (
        select(Conversation, Client, User, Handover, last_reply, history.scalar_subquery(), func.now())
        .join(Client, Client.id == Conversation.client_id)
        .join(User, User.id == Conversation.user_id)
        .outerjoin(Handover, Handover.open_in(Conversation.id))
        .where(Conversation.id == conversation_id)
    )


def _lease_taking() -> ReturningInsert[Any]:
    """The conversation's lease, if it is free or its holder's has expired: the new version."""
    lease_until = func.now() + bindparam("lease", type_=Interval)
    stmt = insert(TurnLease).values(
        conversation_id=bindparam("conversation"), version=1, owner=bindparam("owner"), turn_id=bindparam("turn"), lease_until=lease_until
    )
    return stmt.on_conflict_do_update(
        index_elements=[TurnLease.conversation_id],
        set_={"version": TurnLease.version + 1, "owner": stmt.excluded.owner, "turn_id": stmt.excluded.turn_id, "lease_until": lease_until},
        where=TurnLease.lease_until.is_(None) | (TurnLease.lease_until < func.now()),
    ).returning(TurnLease.version)


def _claiming() -> ReturningUpdate[Any]:
    """Every received message of a conversation, and those still being processed for an owner whose lease
    expired, claimed for the turn; with the status each had."""
    waiting = (
        select(Message.id, Message.status.label("was"))
        .where(
            Message.conversation_id == bindparam("conversation"),
            Message.status.in_((MessageStatus.RECEIVED, MessageStatus.PROCESSING)),
        )
        .subquery()
    )
    return (
        update(Message)
        .where(Message.id == waiting.c.id)
        .values(status=MessageStatus.PROCESSING, turn_id=bindparam("turn"), claimed_at=text("now()"))
        .returning(Message, waiting.c.was)
        .execution_options(synchronize_session=False)
    )


def _lease_release() -> ReturningUpdate[Any]:
    """The turn's lease released, if it is still this version's; with whether the customer wrote again."""
    conversation_id: BindParameter[uuid.UUID] = bindparam("conversation")
    return (
        update(TurnLease)
        .where(TurnLease.conversation_id == conversation_id, TurnLease.version == bindparam("turn_version"))
        .values(lease_until=None)
        .returning(exists().where(Message.conversation_id == conversation_id, Message.status == MessageStatus.RECEIVED))
    )


_OPENING_READ = _opening_read()
_LEASE_TAKING = _lease_taking()
_CLAIMING = _claiming()
_LEASE_RELEASE = _lease_release()


def _take_lease(session: Session, conversation_id: uuid.UUID, turn_id: uuid.UUID) -> int | None:
    """The conversation's turn lease for this process, if it is free or its holder's has expired: the new
    version. None while another holder's lease runs (a concurrent claim waits on the row, then sees it held)."""
    params = {"conversation": conversation_id, "owner": leases.owner(), "turn": turn_id, "lease": timedelta(seconds=settings.lease_seconds)}
    version: int | None = session.scalar(_LEASE_TAKING, params)
    return version


def _claim_messages(session: Session, conversation_id: uuid.UUID, turn_id: uuid.UUID) -> tuple[list[Message], int]:
    """Claim every received message of the conversation for this turn, in order, with those still being
    processed for an owner whose lease expired (it died or stalled: this turn answers them). Also how many
    of those there were."""
    rows = session.execute(_CLAIMING, {"conversation": conversation_id, "turn": turn_id}).all()
    claimed = sorted((message for message, _ in rows), key=lambda m: (m.created_at, m.id))
    return claimed, sum(1 for _, was in rows if was == MessageStatus.PROCESSING)


def _release_lease(session: Session, conversation_id: uuid.UUID, version: int) -> None:
    session.execute(
        update(TurnLease).where(TurnLease.conversation_id == conversation_id, TurnLease.version == version).values(lease_until=None)
    )


def _chat_turns(history: list[list[str]] | None) -> list[ChatTurn]:
    """The history for the model: the business's side (bot or manager) is the assistant."""
    return [ChatTurn("user" if role == MessageRole.USER else "assistant", content) for role, content in history or []]


def _limited(turn: Turn, decision: Decision) -> Decision:
    """Apply the limits to what was decided: no new handover past the customer's daily escalations, and a
    limit's notice said at most once an hour (after that the turn is only stored)."""
    if decision.action == Action.ESCALATE and turn.handover_status is None and not limits.take(Limit.ESCALATIONS, turn.scope):
        decision = reply_policy.escalations_spent(decision)
    if decision.limit is not None and not limits.first_notice(decision.limit, turn.scope):
        return reply_policy.told_already(decision)
    return decision


def _prepare(turn: Turn, message: Message, *, transcribe: bool = True) -> TurnPart:
    """Read a message as the customer meant it; a voice note is transcribed once and the transcript stored
    (not while the customer is over a rate limit: `transcribe` False)."""
    meta = message.meta or {}
    media = meta.get("media") if isinstance(meta.get("media"), dict) else None
    if message.type == MessageType.AUDIO:
        transcript = meta.get("transcript")
        if transcript is None and transcribe:
            try:
                transcript = _transcribe(turn, message, media)
            except _BudgetSpent:
                return TurnPart(message.id, MessageType.AUDIO, "", VOICE_SKIPPED_NOTE, media, failed=True, skipped=True)
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


class _BudgetSpent(Exception):
    """The client's transcription seconds for today are spent."""


def _transcribe(turn: Turn, message: Message, media: dict[str, Any] | None) -> str | None:
    """Download and transcribe a voice note; None when that failed (the customer is asked to write instead).

    Its length is known before it is paid for: read from the container (a declared `seconds` may be wrong),
    else the declared one or the bytes' worth, whichever is longer; a file whose length cannot be read at all
    is transcribed only up to AUDIO_UNMEASURED_MAX_BYTES. _BudgetSpent when today's seconds are spent."""
    try:
        if not media:
            raise MediaRejected("missing")
        blob = fetch_media(media=media)
        seconds = stt.duration_seconds(blob.data)
        if seconds is None:
            if len(blob.data) > settings.audio_unmeasured_max_bytes:
                raise MediaRejected("too_long", "a voice note of unknown length, larger than AUDIO_UNMEASURED_MAX_BYTES")
            seconds = max(blob.seconds or 0.0, len(blob.data) / _UNMEASURED_BYTES_PER_SECOND)
        if seconds > settings.media_max_seconds:
            raise MediaRejected("too_long")
        if not limits.take(Limit.TRANSCRIPTION, turn.scope, math.ceil(seconds)):
            raise _BudgetSpent
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


def _decide(turn: Turn) -> tuple[Decision, booking.Plan]:
    """The policy decides; this gathers what it needs: the intent, then (for the bot's own answer) the booking
    step, the knowledge and the model's reply, whose prices are checked against the client's services list.
    A turn that consults the model counts once against the client's daily budget; with the budget spent it is
    decided as without a model."""
    facts = turn.facts
    budget: list[bool] = []

    def model_allowed() -> bool:
        if not budget:
            budget.append(limits.take(Limit.MODEL_CALLS, turn.scope))
        return budget[0]

    found = intent.classify(turn.customer_text, client_id=turn.client_id, model_allowed=model_allowed) if facts.words else None
    if turn.booking is not None and facts.sensitive_topic:
        topic = sensitive.find(turn.customer_text, facts.guard)
        if topic is not None and topic.key == _BOOKING_CHANGE:  # "отмена", "другое время": about the booking being made
            facts = replace(facts, sensitive_topic=None)
    routed = reply_policy.route(facts, found)
    if routed is not None:
        return routed, _NO_PLAN
    assert found is not None  # route() decides every turn without words
    heard = flow.Heard(turn.customer_text, reply_policy.yes_or_no(turn.customer_text), found.intent == Intent.QUESTION)
    step = flow.step(turn.booking, heard, _booking_context(turn)) if turn.booking_on else None
    plan = booking.Plan(turn.booking_id, step)
    if step is not None and not step.answer_first:
        return _booking_reply(found, step.reply), plan
    listed = flow.list_answer(turn.customer_text, catalog=turn.catalog, draft=turn.booking) if step is not None else None
    if step is not None and listed:
        return _booking_reply(found, f"{listed}\n\n{step.reply}"), plan
    knowledge = _knowledge(turn)
    answered = reply_policy.answer(facts, found, knowledge, model_configured=assistant.is_configured())
    if isinstance(answered, Decision):
        if step is not None and answered.step in (BotStep.CLARIFY, BotStep.OFFER):
            return _booking_reply(found, step.reply), plan  # nothing known about the question: the booking goes on
        return _with_booking(answered, step), plan
    if not model_allowed():
        return _with_booking(reply_policy.without_model(facts, found, knowledge), step), plan
    try:
        answer = assistant.generate_reply(
            system_prompt=turn.prompt,
            history=turn.history,
            turn_text=turn.text,
            knowledge=answered.knowledge,
            client_name=turn.client_name,
            policy=turn.policy,
            sensitive_topics=facts.guard.labels,
            clock=assistant.clock_note(turn.schedule, turn.now),
            services=_services_for(turn),
            booking=turn.booking_on and step is None,
            log_extra=turn.log,
        )
    except ConfigError:
        return _with_booking(reply_policy.without_model(facts, found, knowledge), step), plan
    except ExternalServiceError:
        return reply_policy.model_failed(facts, found), _NO_PLAN
    if step is None and answer.booking is not None and turn.booking is None and turn.booking_on:
        wish = answer.booking
        hinted = replace(heard, hint=flow.Hint(wish.service, wish.when, wish.name))
        step = flow.step(None, hinted, _booking_context(turn))
        plan = booking.Plan(None, step)
    if step is not None and not answer.reply and answer.handoff == Handoff.NONE:
        return _booking_reply(found, step.reply), plan
    decision = reply_policy.model_answered(facts, found, answer)
    if decision.action == Action.ANSWER and decision.text:
        checked = prices.check(decision.text, catalog=turn.catalog, question=turn.customer_text)
        decision = replace(decision, text=checked.text)
        plan = replace(plan, unlisted_price=checked.unlisted)
    return _with_booking(decision, step), plan


_BOOKING_CHANGE = "appointment_change"
_NO_PLAN = booking.Plan()


def _booking_context(turn: Turn) -> flow.Context:
    return flow.Context(turn.now, turn.schedule, turn.catalog, turn.client_settings, turn.customer_name)


def _booking_reply(found: IntentResult, text_: str) -> Decision:
    return Decision(Action.ANSWER, text=text_, step=BotStep.BOOKING, intent=found.intent, intent_source=found.source)


def _with_booking(decision: Decision, step: flow.Step | None) -> Decision:
    """The bot's answer, then the booking's next question (a question in the middle of a booking is answered first)."""
    if step is None or decision.action != Action.ANSWER:
        return decision
    return replace(decision, text="\n\n".join(t for t in (decision.text, step.reply) if t), step=BotStep.BOOKING)


def _services_for(turn: Turn) -> list[str]:
    """The services list's lines the model is given verbatim: those the turn names (or the one being booked); the
    whole (short) list for a price question that names none."""
    found = turn.catalog.find(turn.customer_text)
    if not found and turn.booking is not None and (entry := turn.catalog.get(turn.booking.service_id)):
        found = [entry]
    if not found and len(turn.catalog.entries) <= _WHOLE_LIST and flow.asks_price(turn.customer_text):
        found = list(turn.catalog.entries)
    return [entry.line for entry in found]


_WHOLE_LIST = 40


def _knowledge(turn: Turn) -> kb.Knowledge:
    """The client's knowledge for this turn; none when the knowledge base is unreachable (answer without it)."""
    try:
        return kb.knowledge_for(client_id=str(turn.client_id), query=turn.customer_text, limit=settings.kb_top_k)
    except ExternalServiceError:
        return kb.NOTHING  # the knowledge module has logged it with service=qdrant
    except Exception as exc:  # the knowledge base is an aid: a bug in it must not cost the customer an answer
        logger.exception("kb.search_crashed", extra={**turn.log, "error_type": type(exc).__name__})
        return kb.NOTHING


def _finish(turn: Turn, decision: Decision, plan: booking.Plan = _NO_PLAN) -> tuple[TurnOutcome, list[uuid.UUID]]:
    """Apply the decision in one transaction, unless the customer wrote again meanwhile: then one later turn covers all."""
    with session_scope() as session:
        conversation = session.scalar(select(Conversation).where(Conversation.id == turn.conversation_id).with_for_update())
        assert conversation is not None
        # The lease is released with this transaction's commit, if it is still this turn's; and whether the
        # customer wrote again, seen after the conversation's lock (a webhook that wrote meanwhile has committed).
        released = session.execute(_LEASE_RELEASE, {"conversation": turn.conversation_id, "turn_version": turn.version}).first()
        if released is None:
            # This worker stalled past its lease and another took the turn over: it answers, this result is dropped.
            held = session.scalar(select(TurnLease.version).where(TurnLease.conversation_id == turn.conversation_id))
            logger.warning("turn.lease_lost", extra={**turn.log, "version": turn.version, "current_version": held})
            return TurnOutcome.LOST, []
        (newer,) = released
        if newer:
            session.execute(unclaim(turn_id=turn.id))
            return TurnOutcome.SUPERSEDED, []
        handover = lifecycle.open_handover(session, conversation.id, lock=True)
        if handover is not None:
            decision = reply_policy.manager_stepped_in(decision)
        session.execute(
            update(Message)
            .where(Message.turn_id == turn.id, Message.status == MessageStatus.PROCESSING)
            .values(status=MessageStatus.PROCESSED, intent=decision.intent)
        )
        outcome = TurnOutcome.STORED
        if decision.action == Action.FORWARD:
            _forward(session, turn)
            lifecycle.customer_wrote(session, conversation.id)
            minutes = turn.client_settings.waiting_notice_minutes
            if decision.text and lifecycle.claim_waiting_notice(session, conversation.id, minutes=minutes):
                _reply(session, turn, decision.text, reason=decision.step)
            outcome = TurnOutcome.FORWARD
        elif decision.action == Action.ESCALATE:
            reason = decision.reason or HandoverReason.HUMAN_REQUEST
            escalation = lifecycle.escalate(
                session, conversation=conversation, reason=reason, client_settings=turn.client_settings, detail=decision.detail
            )
            if escalation.created:
                _reply(session, turn, decision.text or replies.HANDOVER_ACK, reason=decision.reason)
                booking.attach_to_handover(session, client_id=turn.client_id, conversation_id=conversation.id, now=turn.now)
                outcome = TurnOutcome.ESCALATE
            else:
                _forward(session, turn, repeat=True)
                _reply(session, turn, reply_policy.already_called(turn.facts), reason=decision.reason)
                outcome = TurnOutcome.ESCALATE_REPEAT
        elif decision.action == Action.OPT_OUT:
            if handover is not None and handover.status == HandoverStatus.PENDING:
                lifecycle.cancel(session, handover=handover, conversation=conversation)
            lifecycle.mute_for_opt_out(session, conversation=conversation, client_settings=turn.client_settings)
            _reply(session, turn, decision.text or replies.OPT_OUT_ACK, reason=Action.OPT_OUT)
            outcome = TurnOutcome.OPT_OUT
        elif decision.action == Action.ANSWER and decision.text:
            _reply(session, turn, decision.text, reason=decision.step)
            booking.apply(
                session,
                plan,
                client_id=turn.client_id,
                conversation_id=conversation.id,
                timezone=turn.client_settings.timezone,
                customer_text=turn.customer_text,
            )
            outcome = TurnOutcome.ANSWER
        if outcome in (TurnOutcome.ANSWER, TurnOutcome.ESCALATE) and _found_nothing(decision):
            gaps.record(
                session,
                client_id=turn.client_id,
                conversation_id=conversation.id,
                question=turn.customer_text,
                accepted_offer=turn.last_step == BotStep.OFFER and decision.action == Action.ESCALATE,
            )
        outbox_ids = outbox.written(session)
    return outcome, outbox_ids


def _found_nothing(decision: Decision) -> bool:
    """The turn's question had no answer in the knowledge base (asked to clarify, offered or called a manager)."""
    return decision.step in (BotStep.CLARIFY, BotStep.OFFER) or decision.reason == HandoverReason.NO_KNOWLEDGE


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


def _forward(session: Session, turn: Turn, *, repeat: bool = False) -> None:
    """The customer's turn into their Telegram topic, in messages that each fit and that no character can break."""
    note = "🔁 Клиент снова просит менеджера" if repeat else None
    for body in card.customer_parts(turn.customer_name, turn.text or "(сообщение без текста)", note=note):
        topics.queue_text(session, client_id=turn.client_id, conversation_id=turn.conversation_id, text=body)
    for part in turn.parts:
        if part.media and part.type in (*_ATTACHMENTS, MessageType.AUDIO):
            topics.queue_media(session, client_id=turn.client_id, conversation_id=turn.conversation_id, message_id=part.message_id)


def _count(turn: Turn, decision: Decision, outcome: TurnOutcome) -> None:
    """Metrics, the slow-answer alert's sample, and the turn's one log line."""
    response_ms = _response_time_ms(turn)
    metrics.turns.labels(turn.client_slug, outcome).inc()
    if outcome in _REPLIED:
        metrics.response_time.labels(turn.client_slug).observe(response_ms / 1000)
        alerts.record_response(response_ms / 1000)
    if outcome == TurnOutcome.ESCALATE:
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


def _response_time_ms(turn: Turn) -> int:
    """From the customer's last message of the turn until its answer was handed to the messenger."""
    last = max(m.created_at for m in turn.messages)
    return int((datetime.now(UTC) - last).total_seconds() * 1000)


def unclaim(*, turn_id: uuid.UUID | None = None, conversation_id: uuid.UUID | None = None) -> Update:
    """Give claimed messages back, to be claimed by a later turn: those of one turn, or every one of a
    conversation (taken over from an owner whose lease expired)."""
    stmt = update(Message).where(Message.status == MessageStatus.PROCESSING)
    if turn_id is not None:
        stmt = stmt.where(Message.turn_id == turn_id)
    if conversation_id is not None:
        stmt = stmt.where(Message.conversation_id == conversation_id)
    return stmt.values(status=MessageStatus.RECEIVED, turn_id=None, claimed_at=None)


def _release(turn: Turn) -> None:
    with session_scope() as session:
        session.execute(unclaim(turn_id=turn.id))
        _release_lease(session, turn.conversation_id, turn.version)
    logger.error("turn.failed", extra=turn.log)


def redrive_turns(limit: int = 500) -> int:
    """Schedule the turns nobody is answering: messages being processed whose lease expired (the worker
    died or stalled: taken over within LEASE_SECONDS), and received messages that waited past their turn's
    longest wait (their job was lost: a Redis outage). A periodic task, every REDRIVE_INTERVAL_SECONDS."""
    overdue = timedelta(seconds=settings.buffer_max_wait_seconds) + _REDRIVE_GRACE
    lease = TurnLease.__table__
    with session_scope() as session:
        conversation_ids = list(
            session.scalars(
                select(Message.conversation_id)
                .outerjoin(lease, lease.c.conversation_id == Message.conversation_id)
                .where(
                    (Message.status == MessageStatus.PROCESSING)
                    | ((Message.status == MessageStatus.RECEIVED) & (Message.created_at < func.now() - overdue)),
                    lease.c.lease_until.is_(None) | (lease.c.lease_until < func.now()),
                )
                .group_by(Message.conversation_id)
                .limit(limit)
            )
        )
    for conversation_id in conversation_ids:
        scheduling.enqueue_turn(conversation_id)
    if conversation_ids:
        logger.warning("maintenance.turns_redriven", extra={"count": len(conversation_ids)})
    return len(conversation_ids)


def prefetch_turn(conversation_id: uuid.UUID) -> None:
    """Prepare a waiting turn's knowledge query while the customer pauses (see scheduling.Dispatcher).

    Only text turns the bot will answer: a voice note's words are not known before the turn transcribes
    it, and a muted bot or an open handover searches no knowledge."""
    open_handover = exists().where(Handover.open_in(conversation_id))
    with db.autocommit() as connection:
        rows = connection.execute(
            select(Message.type, Message.content)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.conversation_id == conversation_id,
                Message.status == MessageStatus.RECEIVED,
                ~Conversation.muted_at(func.now()),
                ~open_handover,
            )
            .order_by(Message.created_at, Message.id)
        ).all()
    if not rows or any(type_ != MessageType.TEXT for type_, _ in rows):
        return
    kb.warm_query("\n".join(content for _, content in rows if content.strip()))
