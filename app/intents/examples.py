"""A client's own labelled examples (`intent-examples load`), stored with their e5 vectors in
`intent_examples` so that no worker embeds them again, and read by the turn through a short per-process
cache: a change reaches every worker within EXAMPLES_CACHE_SECONDS."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.intents.embedding import EMBEDDER, embed_many
from app.intents.labels import Intent
from app.intents.neighbours import ClientExamples
from app.models.intent import IntentExample
from app.utils.cache import TtlLru

logger = logging.getLogger(__name__)

EXAMPLES_CACHE_SECONDS = 60
_cache: TtlLru[uuid.UUID, ClientExamples] = TtlLru(max_entries=512, ttl_seconds=EXAMPLES_CACHE_SECONDS)


def replace(session: Session, client_id: uuid.UUID, rows: Sequence[tuple[str, Intent]]) -> int:
    """Make these the client's examples (the file is the truth: the previous set goes). The same text twice
    with two labels is refused, naming it; nothing is changed then."""
    labels: dict[str, Intent] = {}
    for text, label in rows:
        if labels.setdefault(text, label) != label:
            raise ValueError(f"{text!r} is labelled both {labels[text]} and {label}")
    texts = list(labels)
    vectors = embed_many(texts, cache_dir=None) if texts else np.zeros((0, 0), dtype=np.float32)
    session.execute(delete(IntentExample).where(IntentExample.client_id == client_id))
    session.add_all(
        IntentExample(client_id=client_id, text=text, label=labels[text], embedder=EMBEDDER, vector=vector.tobytes(), position=i)
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )
    session.flush()
    _cache.clear()
    return len(texts)


def listed(session: Session, client_id: uuid.UUID) -> list[tuple[str, Intent]]:
    """The client's examples in the order of their file."""
    rows = session.execute(
        select(IntentExample.text, IntentExample.label).where(IntentExample.client_id == client_id).order_by(IntentExample.position)
    )
    return [(text, Intent(label)) for text, label in rows]


def for_client(client_id: uuid.UUID) -> ClientExamples | None:
    """The client's examples ready for `classify` (None when it has none), cached for a minute."""
    cached = _cache.get(client_id)
    if cached is None:
        cached = _read(client_id)
        _cache.put(client_id, cached)
    return cached if cached.texts else None


def _read(client_id: uuid.UUID) -> ClientExamples:
    with session_scope() as session:
        rows = session.execute(
            select(IntentExample.text, IntentExample.label, IntentExample.embedder, IntentExample.vector)
            .where(IntentExample.client_id == client_id)
            .order_by(IntentExample.position)
        ).all()
    usable = [row for row in rows if row.embedder == EMBEDDER]
    if len(usable) < len(rows):
        logger.warning("intent.examples_stale", extra={"client_id": str(client_id), "skipped": len(rows) - len(usable)})
    if not usable:
        return ClientExamples((), (), np.zeros((0, 0), dtype=np.float32))
    vectors = np.stack([np.frombuffer(row.vector, dtype=np.float32) for row in usable])
    return ClientExamples(tuple(row.text for row in usable), tuple(Intent(row.label) for row in usable), vectors)


def forget() -> None:
    """Forget the cached examples of every client (tests, and a process that just changed them)."""
    _cache.clear()
