"""Finding 6: /metrics (which names every client) and /health were public, and every /health call checked
the database, Redis and the embedded knowledge base. Now /metrics needs METRICS_TOKEN, liveness does no I/O
and readiness is checked at most once per HEALTH_CACHE_SECONDS however often it is asked."""

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr
from sqlalchemy import event

from app.config import settings
from app.db import engine
from tests.helpers import chatflow_payload


@contextmanager
def _statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_metrics_need_their_token(api, make_client, monkeypatch):
    make_client("secret-salon")
    api.post("/webhook/secret-salon", json=chatflow_payload("Привет"))
    assert api.get("/metrics").status_code == 503  # no METRICS_TOKEN: off
    monkeypatch.setattr(settings, "metrics_token", SecretStr("metrics-token-for-the-test"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "metrics-token-for-the-test"}):
        response = api.get("/metrics", headers=headers)
        assert response.status_code == 401 and "secret-salon" not in response.text
    response = api.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-the-test"})
    assert response.status_code == 200 and 'client="secret-salon"' in response.text


def test_liveness_touches_nothing(api):
    with _statements() as seen:
        for _ in range(20):
            assert api.get("/health/live").json() == {"status": "ok"}
    assert seen == []


def test_readiness_is_checked_once_per_interval(api, monkeypatch):
    monkeypatch.setattr(settings, "health_cache_seconds", 60.0)
    with _statements() as seen:
        for path in ("/health", "/health/ready") * 10:
            response = api.get(path)
            assert response.status_code == 200 and response.json()["db"] == "ok"
    assert sum("SELECT 1" in statement for statement in seen) == 1
