"""Questions the bot could not answer: every turn whose search found no knowledge is recorded with the customer's
words and the query vector the search already computed (no second embedding), and linked to the handover opened
for missing knowledge. `groups()` puts similar questions together for `kb gaps` and the daily digest."""

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.config import settings
from app.models import OPEN_HANDOVER_STATUSES, Handover, HandoverReason, KnowledgeGap
from app.services.knowledge import kb

QUESTION_CHARS = 1000
_OFFER_WINDOW = timedelta(hours=2)  # the questions a "да" to the offer of a manager is about
_MAX_ROWS = 5000  # grouped at most, the latest first
_EXAMPLES = 3


@dataclass
class GapGroup:
    """Similar unanswered questions: the first seen stands for the group."""

    question: str
    count: int = 0
    handovers: int = 0  # of them, how many a manager was called for
    last_at: datetime | None = None
    examples: list[str] = field(default_factory=list)  # other wordings, up to three


def record(session: Session, *, client_id: uuid.UUID, conversation_id: uuid.UUID, question: str, accepted_offer: bool = False) -> None:
    """In the turn's transaction: the turn found no knowledge for `question`. With `accepted_offer` the turn is the
    customer's "да" to the offer of a manager: the questions before it are linked to the handover just opened."""
    handover_id = session.scalar(
        select(Handover.id).where(
            Handover.conversation_id == conversation_id,
            Handover.status.in_(OPEN_HANDOVER_STATUSES),
            Handover.reason == HandoverReason.NO_KNOWLEDGE,
        )
    )
    if accepted_offer:
        if handover_id is not None:
            session.execute(
                update(KnowledgeGap)
                .where(
                    KnowledgeGap.conversation_id == conversation_id,
                    KnowledgeGap.handover_id.is_(None),
                    KnowledgeGap.created_at > func.now() - _OFFER_WINDOW,
                )
                .values(handover_id=handover_id)
            )
        return
    question = question.strip()[:QUESTION_CHARS]
    if not question:
        return
    searched = kb.searched_vector(question)
    session.add(
        KnowledgeGap(
            client_id=client_id,
            conversation_id=conversation_id,
            handover_id=handover_id,
            question=question,
            embedder=searched[0] if searched else None,
            vector=searched[1] if searched else None,
        )
    )


def questions_of(session: Session, handover_id: uuid.UUID) -> list[str]:
    """The unanswered questions behind a handover, in order."""
    return list(
        session.scalars(select(KnowledgeGap.question).where(KnowledgeGap.handover_id == handover_id).order_by(KnowledgeGap.created_at))
    )


def groups(session: Session, *, client_id: uuid.UUID, since: datetime, until: datetime | None = None) -> list[GapGroup]:
    """A client's unanswered questions of a period, similar ones together, the most asked first."""
    query = select(
        KnowledgeGap.question, KnowledgeGap.vector, KnowledgeGap.embedder, KnowledgeGap.handover_id, KnowledgeGap.created_at
    ).where(KnowledgeGap.client_id == client_id, KnowledgeGap.created_at >= since)
    if until is not None:
        query = query.where(KnowledgeGap.created_at < until)
    rows = session.execute(query.order_by(KnowledgeGap.created_at.desc()).limit(_MAX_ROWS)).all()
    found: list[GapGroup] = []
    leaders: dict[str, _Leaders] = {}  # by embedder (a vector space): each group's first vector
    by_words: dict[str, GapGroup] = {}
    for question, vector, embedder, handover_id, created_at in reversed(rows):  # oldest first: the first wording leads
        group = by_words.get(_words(question))
        if group is None:
            if vector is not None and embedder:
                space = leaders.setdefault(embedder, _Leaders(len(vector)))
                group = space.closest(_unit(vector), settings.kb_gap_similarity)
            if group is None:
                group = GapGroup(question)
                found.append(group)
                if vector is not None and embedder:
                    space.add(_unit(vector), group)
        by_words.setdefault(_words(question), group)
        group.count += 1
        group.handovers += handover_id is not None
        group.last_at = created_at
        if question != group.question and question not in group.examples and len(group.examples) < _EXAMPLES:
            group.examples.append(question)
    found.sort(key=lambda g: (-g.count, -(g.last_at.timestamp() if g.last_at else 0)))
    return found


class _Leaders:
    """The groups' first vectors in one matrix: a question is compared with all of them in one product."""

    def __init__(self, dim: int) -> None:
        self.vectors = np.zeros((16, dim), dtype=np.float32)
        self.groups: list[GapGroup] = []

    def closest(self, unit: np.ndarray, floor: float) -> GapGroup | None:
        if not self.groups or unit.shape[0] != self.vectors.shape[1]:
            return None
        scores = self.vectors[: len(self.groups)] @ unit
        best = int(np.argmax(scores))
        return self.groups[best] if float(scores[best]) >= floor else None

    def add(self, unit: np.ndarray, group: GapGroup) -> None:
        if unit.shape[0] != self.vectors.shape[1]:
            return
        if len(self.groups) == len(self.vectors):
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[len(self.groups)] = unit
        self.groups.append(group)


def _unit(vector: list[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm else array


def _words(question: str) -> str:
    return " ".join(re.findall(r"\w+", question.lower()))
