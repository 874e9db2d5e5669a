"""Leases: a worker's claim on a piece of work (a turn, an outbox item) lasts LEASE_SECONDS unless renewed.

Each claim is a row the owner wrote with a version (its fencing token). While a process holds claims, its
heartbeat thread renews all of them every third of the lease, on a database connection of its own (one,
never shared with the work, so a busy pool cannot starve it). A process that dies stops renewing: its
claims expire within LEASE_SECONDS and the re-drive hands the work to another worker. A claim the heartbeat
could not renew (taken over, or gone) is marked lost; the owner's final write checks the version anyway,
so a lost claim can never close its work twice.

The owning module says how its claims are renewed: `hold(kind, key, renew)` with `renew(connection, keys)`
returning the keys still held, in one statement for all of a kind's claims.
"""

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import Engine

from app.config import settings

logger = logging.getLogger(__name__)

Renew = Callable[[Connection, list[Hashable]], set[Hashable]]


def _owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Claim:
    """One held claim; `lost` once the heartbeat found it taken over (the owner's result will be dropped)."""

    kind: str
    key: Hashable
    lost: bool = field(default=False)


class _Heartbeat:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, dict[Hashable, Claim]] = {}
        self._renew: dict[str, Renew] = {}
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._pid = os.getpid()
        self._owner = _owner_name()
        self._wake = threading.Event()

    @property
    def owner(self) -> str:
        if self._pid != os.getpid():  # a forked child: its own name, its own thread and connection
            with self._lock:
                self._pid, self._owner, self._engine, self._thread = os.getpid(), _owner_name(), None, None
                self._held.clear()
        return self._owner

    def add(self, claim: Claim, renew: Renew) -> None:
        self.owner  # noqa: B018  # after a fork: start afresh
        with self._lock:
            self._renew[claim.kind] = renew
            self._held.setdefault(claim.kind, {})[claim.key] = claim
            if self._thread is None:  # the first claim of this process
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def remove(self, claim: Claim) -> None:
        with self._lock:
            self._held.get(claim.kind, {}).pop(claim.key, None)

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.lease_seconds / 3)
            self._wake.clear()
            try:
                self.beat()
            except Exception as exc:  # the database is away: the claims may expire, the work is re-driven
                logger.warning("lease.heartbeat_failed", extra={"error_type": type(exc).__name__, "error": str(exc)[:200]})

    def beat(self) -> None:
        """Renew every claim this process holds (one statement per kind); mark the ones it no longer holds."""
        with self._lock:
            held = {kind: dict(claims) for kind, claims in self._held.items() if claims}
        if not held:
            return
        with self._connection() as connection:
            for kind, claims in held.items():
                kept = self._renew[kind](connection, list(claims))
                connection.commit()
                with self._lock:
                    still_held = set(self._held.get(kind, {}))
                for key, claim in claims.items():
                    if key not in kept and key in still_held and not claim.lost:  # (not one released meanwhile)
                        claim.lost = True
                        logger.warning("lease.lost", extra={"kind": kind, "key": str(key), "owner": self.owner})

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._engine is None:
            self._engine = create_engine(
                settings.database_url,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                hide_parameters=True,
                connect_args={
                    "connect_timeout": 3,
                    "application_name": "truffles-heartbeat",
                    "options": f"-c statement_timeout={max(1000, settings.lease_seconds * 1000 // 4)}",
                },
            )
        with self._engine.connect() as connection:
            yield connection


_heartbeat = _Heartbeat()


def owner() -> str:
    """This process's name on its claims (host:pid:random), for the logs and the rows."""
    return _heartbeat.owner


@contextmanager
def hold(kind: str, key: Hashable, renew: Renew) -> Iterator[Claim]:
    """Have this process's heartbeat renew the claim while the block runs."""
    claim = Claim(kind, key)
    _heartbeat.add(claim, renew)
    try:
        yield claim
    finally:
        _heartbeat.remove(claim)


def wake() -> None:
    """Have the heartbeat renew now and re-read LEASE_SECONDS for its period (tests change it)."""
    _heartbeat.wake()
