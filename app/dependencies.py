"""FastAPI dependencies as Annotated aliases. Routers never build clients themselves."""

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.config import settings
from app.db import session_scope
from app.services import clients
from app.utils.errors import ConfigError, Unauthorized


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_client_id(slug: str) -> str:
    """The id of the client named by the path's `slug` (404 if unknown), from a session closed at once: the
    knowledge base's work that follows takes seconds and must not hold a database connection meanwhile."""
    with session_scope() as session:
        return str(clients.get_by_slug(session, slug).id)


DbSession = Annotated[Session, Depends(get_db)]
ClientIdFromSlug = Annotated[str, Depends(get_client_id)]


def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
    """Operator endpoints: `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time."""
    if settings.admin_token is None:
        raise ConfigError("ADMIN_TOKEN is not set: operator endpoints are disabled")
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.admin_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("missing or invalid bearer token")
