"""Clients (tenants): lookup for the hot path, and the operator's create/update/list."""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Client
from app.schemas.client import ClientSettings
from app.utils import crypto
from app.utils.cache import TtlLru
from app.utils.errors import BadRequest, NotFound, Unauthorized

_CACHE_TTL_SECONDS = 30.0
# Known clients only (an unknown slug is never remembered), least recently used dropped first.
_CACHE_MAX = 1024
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # the clients.slug CHECK constraint


@dataclass(frozen=True)
class ClientInfo:
    """What the webhook needs to know about a client, safe to cache between requests."""

    id: uuid.UUID
    slug: str
    is_active: bool
    webhook_secret_hash: str | None
    webhook_insecure: bool
    settings: ClientSettings


_cache: TtlLru[str, ClientInfo] = TtlLru(max_entries=_CACHE_MAX, ttl_seconds=_CACHE_TTL_SECONDS)


def webhook_client(slug: str, secret: str | None) -> ClientInfo:
    """The client a webhook is addressed to, its secret checked in constant time (401 when wrong or missing;
    a client without a secret refuses every delivery unless it was created --insecure-no-secret).

    A slug that cannot exist is refused before any lookup. Known clients are cached briefly (an operator's
    change applies within _CACHE_TTL_SECONDS), so the webhook reads the database only on a miss."""
    if SLUG_PATTERN.fullmatch(slug) is None:
        raise NotFound("unknown client")
    info = _cache.get(slug)
    if info is None:
        with session_scope() as session:
            client = session.scalar(select(Client).where(Client.slug == slug))
            info = _info(client) if client else None
        if info is not None:
            _cache.put(slug, info)
    if info is None or not info.is_active:
        raise NotFound(f"unknown client '{slug}'")
    if info.webhook_secret_hash is not None:
        if not crypto.matches(secret, info.webhook_secret_hash):
            raise Unauthorized("invalid or missing webhook secret (X-Webhook-Secret header or ?secret=)")
    elif not info.webhook_insecure:
        raise Unauthorized("this client has no webhook secret: deliveries are refused (python -m app.cli client update --generate-secret)")
    return info


def _info(client: Client) -> ClientInfo:
    return ClientInfo(client.id, client.slug, client.is_active, client.webhook_secret_hash, client.webhook_insecure, settings_of(client))


def cache_size() -> int:
    return len(_cache)


def clear_cache() -> None:
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
    return ClientSettings.from_stored(client.settings)


def create(session: Session, *, slug: str, name: str, **fields: Any) -> Client:
    """Create a client; `settings` (a dict) is validated, everything else is a column."""
    if session.scalar(select(Client.id).where(Client.slug == slug)) is not None:
        raise BadRequest(f"client '{slug}' already exists")
    client = Client(slug=slug, name=name, settings={})
    _apply(client, fields)
    session.add(client)
    _flush(session)
    clear_cache()
    return client


def update(session: Session, *, slug: str, **fields: Any) -> Client:
    client = get_by_slug(session, slug)
    _apply(client, fields)
    _flush(session)
    clear_cache()
    return client


def _flush(session: Session) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        if "uq_clients_telegram_bot_chat" in str(exc.orig):
            raise BadRequest("another client already uses this Telegram chat with the same bot") from None
        raise


def reseal_tokens(session: Session) -> int:
    """Encrypt every stored token with SECRETS_KEY's first key (the rotation's last step); how many there were."""
    count = 0
    for client in session.scalars(select(Client).with_for_update()):
        for column in ("chatflow_token", "telegram_bot_token"):
            value = getattr(client, column)
            if value is not None:
                setattr(client, column, crypto.reseal(value))
                count += 1
    session.flush()
    return count


def weaknesses(session: Session) -> dict[str, list[str]]:
    """Active clients whose webhook takes unauthenticated deliveries, and those with a token in plain text
    (stored before encryption existed: `secrets rotate`)."""
    found: dict[str, list[str]] = {"webhook_without_secret": [], "plain_text_tokens": []}
    for client in session.scalars(select(Client).where(Client.is_active).order_by(Client.slug)):
        if client.webhook_secret_hash is None and client.webhook_insecure:
            found["webhook_without_secret"].append(client.slug)
        if any(token is not None and not crypto.is_sealed(token) for token in (client.chatflow_token, client.telegram_bot_token)):
            found["plain_text_tokens"].append(client.slug)
    return found


def list_all(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.slug)))


def new_webhook_secret() -> str:
    return crypto.new_shared_secret()


_COLUMNS = {
    "name",
    "prompt",
    "policy",
    "chatflow_instance_id",
    "telegram_chat_id",
    "webhook_insecure",
    "is_active",
    "company_id",
}


def _apply(client: Client, fields: dict[str, Any]) -> None:
    """Set the given fields. Tokens are encrypted and the webhook secret is kept as a digest, never as given."""
    new_settings = fields.pop("settings", None)
    for key, value in fields.items():
        if value is None:
            continue
        if key == "webhook_secret":
            if len(value) < crypto.MIN_SHARED_SECRET_CHARS:
                raise BadRequest(f"a webhook secret needs at least {crypto.MIN_SHARED_SECRET_CHARS} characters (or use --generate-secret)")
            client.webhook_secret_hash = crypto.digest(value)
            client.webhook_insecure = False
        elif key == "chatflow_token":
            client.chatflow_token = crypto.seal(value)
        elif key == "telegram_bot_token":
            head = value.split(":", 1)[0]
            if not (head.isdigit() and len(head) <= 18 and ":" in value):
                raise BadRequest("a Telegram bot token looks like 123456789:AA...")
            client.telegram_bot_token = crypto.seal(value)
            client.telegram_bot_id = int(head)
        elif key in _COLUMNS:
            setattr(client, key, value)
        else:
            raise BadRequest(f"unknown client field '{key}'")
    if new_settings:
        merged = {**(client.settings or {}), **new_settings}
        try:
            ClientSettings.model_validate(merged)
        except ValidationError as exc:
            raise BadRequest(f"invalid client settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
        client.settings = merged
