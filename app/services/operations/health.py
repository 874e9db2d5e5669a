"""Dependency checks for /health, each bounded by a short timeout."""

import logging

from sqlalchemy import text

from app import queue
from app.db import engine
from app.redis_client import redis_client
from app.schemas.health import HEALTHY, Health
from app.services.knowledge import qdrant
from app.services.operations import alerts

logger = logging.getLogger(__name__)


def check_db() -> str:
    try:
        with engine.connect() as connection:
            connection.execute(text("SET LOCAL statement_timeout = 2000"))
            connection.execute(text("SELECT 1"))
        return Health.OK
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def check_redis() -> str:
    try:
        redis_client.ping()
        return Health.OK
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def check_qdrant() -> str:
    try:
        return Health.OK if qdrant.ping() else "error: unreachable"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def queue_backlog() -> int | None:
    try:
        return queue.backlog()
    except Exception:
        return None


def run_checks() -> dict[str, object]:
    """Every dependency, each bounded by a short timeout; a failure is logged as critical and alerted."""
    checks = {"db": check_db(), "redis": check_redis(), "qdrant": check_qdrant()}
    status = Health.OK if all(v in HEALTHY for v in checks.values()) else Health.DEGRADED
    if status != Health.OK:
        logger.critical("health.failed", extra=checks)
    alerts.evaluate(checks)
    return {"status": status, **checks, "queue_backlog": queue_backlog()}
