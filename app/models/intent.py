"""What a customer wants from a turn (the `intent` of a message), and a client's own labelled examples."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, check_in, now_column, uuid_pk


class Intent(StrEnum):
    """The classes the service acts on (app/intents): a manager for the first two, silence for opt_out."""

    HUMAN_REQUEST = "human_request"
    FRUSTRATION = "frustration"
    OPT_OUT = "opt_out"
    BOOKING = "booking"  # the learned model's classes; the rules never give booking or thanks
    QUESTION = "question"
    GREETING = "greeting"
    THANKS = "thanks"
    OTHER = "other"


class IntentExample(Base):
    """One of a client's labelled messages (`intent-examples load`): corrects or extends the shipped model
    for that client without retraining it. The e5 vector is stored so no worker embeds the set again."""

    __tablename__ = "intent_examples"
    __table_args__ = (UniqueConstraint("client_id", "text"), CheckConstraint(check_in("label", Intent), name="label"))

    id: Mapped[uuid.UUID] = uuid_pk()
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(32))
    embedder: Mapped[str] = mapped_column(String(64))  # whose vector: another embedder's means nothing to the model
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    position: Mapped[int] = mapped_column()  # the line order of the file
    created_at: Mapped[datetime] = now_column()
