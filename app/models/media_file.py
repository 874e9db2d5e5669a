import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, now_column


class MediaFile(Base):
    """A file the service serves at GET /media/{token} for the WhatsApp gateway to download (a manager's photo,
    document, voice note). The bytes are in MEDIA_STORE_PATH under the token; removed once expired."""

    __tablename__ = "media_files"
    __table_args__ = (Index("ix_media_files_expires_at", "expires_at"),)

    token: Mapped[str] = mapped_column(String(64), primary_key=True)  # secrets.token_urlsafe(32): unguessable
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))  # what the token was made for, e.g. "manager_media"
    content_type: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = now_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
