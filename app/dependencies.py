"""FastAPI dependencies as Annotated aliases. Routers never build clients themselves."""

import hmac
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.config import settings
from app.db import session_scope
from app.redis_client import redis_client
from app.utils.errors import ConfigError, Unauthorized


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_redis() -> redis.Redis:
    return redis_client


DbSession = Annotated[Session, Depends(get_db)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
    """Operator endpoints: `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time."""
    if settings.admin_token is None:
        raise ConfigError("ADMIN_TOKEN is not set: operator endpoints are disabled")
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.admin_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("missing or invalid bearer token")
