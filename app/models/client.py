import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, now_column, uuid_pk


class Client(Base):
    """A tenant: one WhatsApp number of a business, with its own prompt, knowledge and messengers."""

    __tablename__ = "clients"
    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'", name="slug_format"),
        # One client per (bot, chat): a manager's update is routed by them. 0 stands for the deployment's default bot.
        Index(
            "uq_clients_telegram_bot_chat",
            func.coalesce(text("telegram_bot_id"), 0),
            "telegram_chat_id",
            unique=True,
            postgresql_where=text("telegram_chat_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    company_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("companies.id", ondelete="SET NULL"))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The business's rules for the bot (`client policy set`): instructions and topics for a person, never
    # knowledge to quote to a customer
    policy: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Tokens are stored encrypted (app/utils/crypto.py: "enc:v1:..."); read them through crypto.reveal.
    chatflow_token: Mapped[str | None] = mapped_column(Text)
    chatflow_instance_id: Mapped[str | None] = mapped_column(String(200))
    telegram_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    telegram_bot_token: Mapped[str | None] = mapped_column(Text)
    # The own bot's id (the token's first part), for routing without decrypting; None: the default bot
    telegram_bot_id: Mapped[int | None] = mapped_column(BigInteger)
    # SHA-256 digest of the secret ChatFlow presents (crypto.digest); without one, deliveries are refused
    # unless webhook_insecure was chosen explicitly (client create --insecure-no-secret)
    webhook_secret_hash: Mapped[str | None] = mapped_column(String(80))
    webhook_insecure: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Per-client tunables (buffer wait, mute minutes, reminder timeouts, ...), validated by ClientSettings.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = now_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())
