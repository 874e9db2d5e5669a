"""The bot learns from managers' answers: a handover opened because the knowledge base had nothing, in which a
manager answered the customer, becomes a suggestion (the question and the manager's words). Nothing enters the
knowledge base until an operator accepts one (`kb accept`): it is then stored as a one-entry Q&A document, so the
next customer asking the same gets the answer from the bot. Suggestions are gathered from what is already stored
(the handover, its questions in gaps.py, the manager's messages) whenever they are listed."""

import uuid
from dataclasses import dataclass

import yaml
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import db
from app.models import (
    Handover,
    HandoverReason,
    KnowledgeGap,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    Suggestion,
    SuggestionStatus,
)
from app.services.knowledge import gaps

ANSWER_CHARS = 2000
_SENT = (MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.IGNORED)  # IGNORED: staff writing from the business phone


class SuggestionNotFound(LookupError):
    """No suggestion of this client starts with that id (or more than one does)."""


@dataclass(frozen=True)
class Entry:
    """What a suggestion adds to the knowledge base."""

    source: str  # the document's name
    data: bytes  # a YAML list with one {question, answer}


def collect(session: Session, *, client_id: uuid.UUID) -> int:
    """Turn the client's handovers opened for missing knowledge, in which a manager answered, into suggestions;
    a pending one follows the manager's later messages. Returns how many are new."""
    handovers = session.execute(
        select(Handover.id, Handover.conversation_id, Handover.created_at, Handover.resolved_at, Handover.assigned_to)
        .outerjoin(Suggestion, Suggestion.handover_id == Handover.id)
        .where(
            Handover.client_id == client_id,
            Handover.reason == HandoverReason.NO_KNOWLEDGE,
            or_(Suggestion.id.is_(None), Suggestion.status == SuggestionStatus.PENDING),
            select(KnowledgeGap.id).where(KnowledgeGap.handover_id == Handover.id).exists(),
        )
    ).all()
    new = 0
    for handover_id, conversation_id, opened, closed, manager in handovers:
        words = session.scalars(
            select(Message.content)
            .where(
                Message.conversation_id == conversation_id,
                Message.role == MessageRole.MANAGER,
                Message.type == MessageType.TEXT,
                Message.status.in_(_SENT),
                Message.created_at >= opened,
                Message.created_at <= func.coalesce(closed, func.now()),
            )
            .order_by(Message.created_at)
        ).all()
        answer = "\n".join(w.strip() for w in words if w.strip())[:ANSWER_CHARS]
        questions = gaps.questions_of(session, handover_id)
        if not answer or not questions:
            continue
        inserted = session.scalar(
            insert(Suggestion)
            .values(client_id=client_id, handover_id=handover_id, question=questions[0], answer=answer, manager=manager)
            .on_conflict_do_update(
                index_elements=["handover_id"],
                set_={"answer": answer, "manager": manager},
                where=Suggestion.status == SuggestionStatus.PENDING,
            )
            .returning(Suggestion.created_at == func.now())  # inserted by this transaction
        )
        new += bool(inserted)
    return new


def listed(session: Session, *, client_id: uuid.UUID, status: SuggestionStatus | None = SuggestionStatus.PENDING) -> list[Suggestion]:
    """The client's suggestions (pending by default), the oldest first."""
    query = select(Suggestion).where(Suggestion.client_id == client_id)
    if status is not None:
        query = query.where(Suggestion.status == status)
    return list(session.scalars(query.order_by(Suggestion.created_at)))


def find(session: Session, *, client_id: uuid.UUID, id_prefix: str, lock: bool = False) -> Suggestion:
    """The client's suggestion whose id starts with `id_prefix` (as listed: its first eight characters will do)."""
    prefix = id_prefix.strip().lower()
    query = (
        select(Suggestion)
        .where(Suggestion.client_id == client_id, cast(Suggestion.id, String).startswith(prefix, autoescape=True))
        .limit(2)
    )
    found = list(session.scalars(query.with_for_update() if lock else query)) if len(prefix) >= 4 else []
    if len(found) != 1:
        raise SuggestionNotFound(id_prefix)
    return found[0]


def entry(suggestion_id: uuid.UUID, *, question: str, answer: str) -> Entry:
    """The knowledge base document an accepted suggestion becomes: one {question, answer} (the operator's words)."""
    pair = {"question": question.strip(), "answer": answer.strip()}
    if not pair["question"] or not pair["answer"]:
        raise ValueError("a suggestion needs both a question and an answer")
    data = yaml.safe_dump([pair], allow_unicode=True, sort_keys=False, width=1000)
    return Entry(source=f"learned-{suggestion_id.hex[:8]}.yaml", data=data.encode())


def accept(session: Session, suggestion: Suggestion, entry_: Entry, *, question: str, answer: str) -> None:
    """Record that the operator accepted it and that it is in the knowledge base as `entry_.source`."""
    suggestion.status = SuggestionStatus.ACCEPTED
    suggestion.question, suggestion.answer, suggestion.source = question.strip(), answer.strip(), entry_.source
    suggestion.decided_at = db.now(session)


def reject(session: Session, suggestion: Suggestion) -> None:
    suggestion.status = SuggestionStatus.REJECTED
    suggestion.decided_at = db.now(session)
