"""Clients (tenants): lookup for the hot path, and the operator's create/update/list."""

import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Client
from app.schemas.client import ClientSettings
from app.utils.errors import BadRequest, NotFound, Unauthorized

_CACHE_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class ClientInfo:
    """What the webhook needs to know about a client, safe to cache between requests."""

    id: uuid.UUID
    slug: str
    is_active: bool
    webhook_secret: str | None
    settings: ClientSettings


_cache: dict[str, tuple[float, ClientInfo | None]] = {}
_cache_lock = threading.Lock()


def webhook_client(slug: str, secret: str | None) -> ClientInfo:
    """The client a webhook is addressed to, with its optional shared secret checked in constant time.

    Cached briefly (an operator's change applies within _CACHE_TTL_SECONDS), so the webhook reads the
    database for it only on a miss."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(slug)
    if hit is None or hit[0] < now:
        with session_scope() as session:
            client = session.scalar(select(Client).where(Client.slug == slug))
            info = ClientInfo(client.id, client.slug, client.is_active, client.webhook_secret, settings_of(client)) if client else None
        # An unknown slug is remembered for less long: a client just created must not wait half a minute.
        ttl = _CACHE_TTL_SECONDS if info is not None else _CACHE_TTL_SECONDS / 6
        with _cache_lock:
            _cache[slug] = (now + ttl, info)
    else:
        info = hit[1]
    if info is None or not info.is_active:
        raise NotFound(f"unknown client '{slug}'")
    if info.webhook_secret and not hmac.compare_digest((secret or "").encode(), info.webhook_secret.encode()):
        raise Unauthorized("invalid or missing X-Webhook-Secret")
    return info


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def get(session: Session, client_id: uuid.UUID) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    return client


def get_by_slug(session: Session, slug: str) -> Client:
    client = session.scalar(select(Client).where(Client.slug == slug))
    if client is None:
        raise NotFound(f"unknown client '{slug}'")
    return client


def settings_of(client: Client) -> ClientSettings:
    """The client's tunables with defaults filled in."""
    return ClientSettings.model_validate(client.settings or {})


def create(session: Session, *, slug: str, name: str, **fields: Any) -> Client:
    """Create a client; `settings` (a dict) is validated, everything else is a column."""
    if session.scalar(select(Client.id).where(Client.slug == slug)) is not None:
        raise BadRequest(f"client '{slug}' already exists")
    client = Client(slug=slug, name=name, settings={})
    _apply(client, fields)
    session.add(client)
    session.flush()
    clear_cache()
    return client


def update(session: Session, *, slug: str, **fields: Any) -> Client:
    client = get_by_slug(session, slug)
    _apply(client, fields)
    session.flush()
    clear_cache()
    return client


def list_all(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.slug)))


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(24)


_COLUMNS = {
    "name",
    "prompt",
    "policy",
    "chatflow_token",
    "chatflow_instance_id",
    "telegram_chat_id",
    "telegram_bot_token",
    "webhook_secret",
    "is_active",
    "company_id",
}


def _apply(client: Client, fields: dict[str, Any]) -> None:
    new_settings = fields.pop("settings", None)
    for key, value in fields.items():
        if key not in _COLUMNS:
            raise BadRequest(f"unknown client field '{key}'")
        if value is not None:
            setattr(client, key, value)
    if new_settings:
        merged = {**(client.settings or {}), **new_settings}
        try:
            ClientSettings.model_validate(merged)
        except ValidationError as exc:
            raise BadRequest(f"invalid client settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
        client.settings = merged
