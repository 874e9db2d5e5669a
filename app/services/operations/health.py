"""Dependency checks for /health, each bounded by a short timeout."""

import logging
import threading
import time

from sqlalchemy import text

from app import queue
from app.config import settings
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


_ready_lock = threading.Lock()
_ready: tuple[float, dict[str, object]] | None = None


def readiness() -> dict[str, object]:
    """run_checks(), at most once per HEALTH_CACHE_SECONDS: probes, however many and however often, cost the
    database, Redis and the knowledge base one check each per interval. Concurrent callers wait for one run."""
    global _ready
    with _ready_lock:
        if _ready is None or time.monotonic() - _ready[0] >= settings.health_cache_seconds:
            _ready = (time.monotonic(), run_checks())
        return _ready[1]


def forget() -> None:
    global _ready
    with _ready_lock:
        _ready = None
