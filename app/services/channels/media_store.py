"""Files this service serves to the WhatsApp gateway (a manager's photo, document, voice note): ChatFlow
sends media by URL and downloads it itself, so the file must be reachable from outside, and never at a
Telegram URL (it carries the bot token).

Each file gets its own unguessable token (secrets.token_urlsafe(32)) for one purpose; the bytes live in
MEDIA_STORE_PATH under the token, the token's row (content type, name, expiry) in media_files.
GET /media/{token} serves it until it expires (MEDIA_TOKEN_HOURS); remove_expired() deletes both
(a periodic maintenance task). With several machines, MEDIA_STORE_PATH must be a folder they share.
"""

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from app.config import settings
from app.db import session_scope
from app.models import MediaFile
from app.utils.errors import NotFound

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class StoredFile:
    path: Path
    content_type: str
    filename: str


def save(*, client_id: uuid.UUID, data: bytes, content_type: str, filename: str, purpose: str) -> str:
    """Store the bytes under a new token; returns the token."""
    token = secrets.token_urlsafe(32)
    folder = settings.media_store_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / token).write_bytes(data)
    with session_scope() as session:
        session.add(
            MediaFile(
                token=token,
                client_id=client_id,
                purpose=purpose,
                content_type=content_type[:100],
                filename=filename[:200],
                size=len(data),
                expires_at=func.now() + timedelta(hours=settings.media_token_hours),
            )
        )
    logger.info("media.stored", extra={"client_id": str(client_id), "purpose": purpose, "size": len(data)})
    return token


def url_for(token: str) -> str:
    """Where the gateway downloads it (PUBLIC_BASE_URL)."""
    return f"{settings.require('public_base_url').rstrip('/')}/media/{token}"


def is_usable(token: str | None) -> bool:
    """A token whose file is still there for a while (a retried send may reuse it)."""
    if not token or not _TOKEN.match(token):
        return False
    with session_scope() as session:
        alive = session.scalar(
            select(MediaFile.token).where(MediaFile.token == token, MediaFile.expires_at > func.now() + timedelta(minutes=30))
        )
    return alive is not None and (settings.media_store_path / token).is_file()


def open_file(token: str) -> StoredFile:
    """The file a token serves; NotFound for an unknown, malformed or expired one."""
    if not _TOKEN.match(token):
        raise NotFound("no such file")
    with session_scope() as session:
        row = session.scalar(select(MediaFile).where(MediaFile.token == token, MediaFile.expires_at > func.now()))
        found = StoredFile(settings.media_store_path / token, row.content_type, row.filename) if row else None
    if found is None or not found.path.is_file():
        raise NotFound("no such file")
    return found


def remove_expired(limit: int = 500) -> int:
    """Delete expired files and their tokens."""
    with session_scope() as session:
        tokens = list(session.scalars(select(MediaFile.token).where(MediaFile.expires_at <= func.now()).limit(limit)))
        if tokens:
            session.execute(delete(MediaFile).where(MediaFile.token.in_(tokens)))
    for token in tokens:
        (settings.media_store_path / token).unlink(missing_ok=True)
    if tokens:
        logger.info("media.expired_removed", extra={"count": len(tokens)})
    return len(tokens)
