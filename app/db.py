"""The database engine and the unit-of-work session scope, built once per process."""

import logging
import select as select_mod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg2
from sqlalchemy import Connection, create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from app.config import settings

logger = logging.getLogger(__name__)

engine: Engine = create_engine(
    settings.database_url,
    pool_size=settings.db_pool_size,
    max_overflow=settings.db_max_overflow,
    # Overload fails fast with a 503 instead of piling up waiting threads.
    pool_timeout=settings.db_pool_timeout_seconds,
    pool_recycle=1800,  # pinged before use only when it may be dead: see _ping_if_closed
    # An error's message and log must not carry what was being stored (a customer's words, a token).
    hide_parameters=True,
    connect_args={"connect_timeout": 5, "application_name": "truffles"},
)
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@event.listens_for(engine, "checkout")
def _ping_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Replace a pooled connection the server has closed (a restart, pg_terminate_backend) before it is used.

    An idle connection has nothing to read unless its server wrote to it: a FATAL message and the close.
    So it is pinged only when its socket is readable. pool_pre_ping pinged every checkout instead: a round
    trip per transaction (about five per answered turn, 3% of the service's time holding the GIL in the
    500-conversation burst), to learn what the socket already says without one."""
    socket = select_mod.poll()  # not select(): the API process may hold more than 1024 descriptors
    socket.register(dbapi_connection.fileno(), select_mod.POLLIN)
    if not socket.poll(0):
        return
    try:
        engine.dialect.do_ping(dbapi_connection)
    except psycopg2.Error as exc:
        if engine.dialect.is_disconnect(cast(Any, exc), dbapi_connection, None):
            raise DisconnectionError("the server closed this pooled connection") from exc  # the pool takes a new one
        raise


# The webhook's single-statement writes: autocommit (no BEGIN/COMMIT round trips) and no pre-ping
# (a dead connection is retried once instead, see execute_once). Its own pool, one connection per request
# thread at most and no overflow: overflow connections are closed on return, and reconnecting under load
# (a PostgreSQL backend forked each time) cost more than the statement itself.
_autocommit_engine: Engine = create_engine(
    settings.database_url,
    isolation_level="AUTOCOMMIT",
    hide_parameters=True,
    pool_size=settings.http_threads,
    max_overflow=0,
    pool_timeout=settings.db_pool_timeout_seconds,
    pool_recycle=1800,
    pool_reset_on_return=None,  # autocommit: no transaction is ever left open to roll back
    connect_args={
        "connect_timeout": 5,
        "application_name": "truffles-webhook",
        "options": f"-c statement_timeout={int(settings.webhook_db_timeout_seconds * 1000)}",
    },
)


def execute_once(statement: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run one self-contained statement (driver SQL, psycopg2 placeholders) in autocommit mode; its first row.

    Straight on the pooled driver connection: the webhook's hottest call skips SQLAlchemy's Connection and
    result layers. Driver errors are raised as SQLAlchemy's (OperationalError answers 503, DataError 422).
    A connection that died since its last use (a PostgreSQL restart) is discarded and the statement
    retried once on a fresh one; any other error, or a second failure, propagates (the webhook answers 503).
    The statement must be safe to repeat (the webhook's insert is: ON CONFLICT DO NOTHING).
    """
    for attempt in (1, 2):
        try:
            connection = _autocommit_engine.raw_connection()
        except psycopg2.Error as exc:
            raise _wrapped(statement, params, exc, invalidated=False) from exc
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(statement, params)
                row = cursor.fetchone() if cursor.description else None
            finally:
                cursor.close()
            return tuple(row) if row is not None else None
        except psycopg2.Error as exc:
            lost = _autocommit_engine.dialect.is_disconnect(cast(Any, exc), connection.dbapi_connection, None)
            if lost:
                # PostgreSQL restarted: every connection made before now is dead too. Mark them all (each is
                # replaced when next checked out), as SQLAlchemy's own Connection does; disposing the pool
                # instead, once per thread that hit a dead connection, would strand connections in old pools.
                _autocommit_engine.pool._invalidate(connection, exc)
            if attempt == 2 or not lost:
                raise _wrapped(statement, params, exc, invalidated=lost) from exc
            logger.warning("db.connection_lost", extra={"error_type": type(exc).__name__, "action": "retry_once"})
        finally:
            connection.close()
    raise AssertionError("unreachable")


def _wrapped(statement: str, params: Mapping[str, Any], exc: psycopg2.Error, *, invalidated: bool) -> DBAPIError:
    # A driver error always comes back as a DBAPIError subclass (OperationalError, DataError, ...).
    wrapped = DBAPIError.instance(
        statement,
        dict(params),
        cast(Any, exc),
        psycopg2.Error,
        hide_parameters=True,
        connection_invalidated=invalidated,
        dialect=_autocommit_engine.dialect,
    )
    return cast(DBAPIError, wrapped)


# What an application may open on a PostgreSQL with default settings: max_connections (100) less the
# superuser_reserved_connections (3).
POSTGRES_DEFAULT_CONNECTIONS = 97


@dataclass(frozen=True)
class ConnectionBudget:
    """The most PostgreSQL connections each kind of process opens, from the settings (README: Scaling out).

    Threads do not add to it: a worker thread holds a connection only for a transaction, never while a model,
    a transcription or a gateway answers (turn.py, outbox.py), so 64 worker threads share the one pool."""

    webhook: int  # the webhook's pool: one per request thread, in the API process only
    shared: int  # everything else (worker threads, maintenance, other routes), in every process
    heartbeat: int = 1  # the lease heartbeat's own connection (app/leases.py), in every process

    @property
    def api_process(self) -> int:
        return self.webhook + self.shared + self.heartbeat

    @property
    def worker_process(self) -> int:
        return self.shared + self.heartbeat

    def total(self, *, worker_processes: int) -> int:
        """One API process and this many `dramatiq app.worker` processes (each of its --processes counts)."""
        return self.api_process + worker_processes * self.worker_process


def connection_budget() -> ConnectionBudget:
    return ConnectionBudget(webhook=settings.http_threads, shared=settings.db_pool_size + settings.db_max_overflow)


def dispose() -> None:
    """Close every pooled connection (tests, after a fork)."""
    engine.dispose()
    _autocommit_engine.dispose()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction per unit of work: commit on success, roll back on any error."""
    session = SessionLocal()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A connection of the shared pool on which each statement commits by itself: a self-contained statement
    (a claim, a status change) costs one round trip, without BEGIN and COMMIT."""
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def now(session: Session) -> datetime:
    """The database's clock (the transaction's start): the one clock every stored time is compared with."""
    value: datetime | None = session.scalar(select(func.now()))
    assert value is not None
    return value
