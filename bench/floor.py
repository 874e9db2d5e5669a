"""The floor of the webhook benchmark: the least a webhook can do and still be safe.

Parse the payload, one Redis SET NX, one PostgreSQL INSERT (into a table of its own), answer. Same
stack and flags as the service (FastAPI, a sync route on the thread pool, SQLAlchemy + psycopg2, redis-py,
uvicorn with uvloop and httptools), so service / floor is the price of everything else the service does.

    DATABASE_URL=... REDIS_URL=... uvicorn bench.floor:app --loop uvloop --http httptools
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import redis
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, text

_THREADS = 32  # the service's HTTP_THREADS default

engine = create_engine(os.environ["DATABASE_URL"], pool_size=20, max_overflow=20, pool_timeout=5)
redis_client = redis.Redis(
    connection_pool=redis.BlockingConnectionPool.from_url(os.environ["REDIS_URL"], max_connections=64, timeout=2, socket_timeout=2)
)

_CREATE = text(
    """
    CREATE TABLE IF NOT EXISTS bench_floor (
        id bigserial PRIMARY KEY,
        external_id text NOT NULL UNIQUE,
        phone text NOT NULL,
        content text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """
)
_INSERT = text("INSERT INTO bench_floor (external_id, phone, content) VALUES (:external_id, :phone, :content) ON CONFLICT DO NOTHING")


class Metadata(BaseModel):
    messageId: str = Field(min_length=1, max_length=200)
    remoteJid: str = Field(min_length=3, max_length=100)
    sender: str | None = None
    timestamp: int | None = None


class Delivery(BaseModel):
    messageType: str = "text"
    message: str = ""
    metadata: Metadata


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = _THREADS
    with engine.begin() as connection:
        connection.execute(_CREATE)
    yield
    engine.dispose()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/webhook/{slug}")
def webhook(slug: str, payload: Delivery) -> dict[str, str]:
    """Store the delivery once."""
    if not redis_client.set(f"floor:{slug}:{payload.metadata.messageId}", 1, nx=True, ex=3600):
        return {"status": "duplicate"}
    with engine.begin() as connection:
        connection.execute(
            _INSERT,
            {"external_id": payload.metadata.messageId, "phone": payload.metadata.remoteJid.split("@")[0], "content": payload.message},
        )
    return {"status": "ok"}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
