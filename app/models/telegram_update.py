from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, now_column


class TelegramUpdate(Base):
    """An update_id already handled for a bot: Telegram redelivers on any non-2xx or timeout."""

    __tablename__ = "telegram_updates"
    __table_args__ = (Index("ix_telegram_updates_received_at", "received_at"),)  # retention

    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime] = now_column()


class TelegramBot(Base):
    """A bot whose webhook points at /telegram-webhook/{bot_id}, with the secret Telegram sends back (its digest)."""

    __tablename__ = "telegram_bots"

    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    webhook_secret_hash: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())
