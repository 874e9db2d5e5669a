"""Qdrant wrapper: one client per process, tenant-scoped reads and writes, timeouts, retries, errors.

Embedded (local mode on `settings.qdrant_path`) unless QDRANT_URL / QDRANT_HOST names a server.
Local mode is not thread-safe and locks its folder to one process, so every call to it is serialized
here. Every failure is logged as `qdrant.call_failed` and raised as ExternalServiceError("qdrant").
Every read and delete takes a `client_id` and filters on it: there is no untenanted query here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from app.config import settings
from app.utils.errors import ConfigError, ExternalServiceError
from app.utils.logging import scrub

logger = logging.getLogger(__name__)

T = TypeVar("T")

DENSE = "dense"  # the chunk's text, embedded as a passage
HEADING = "heading"  # the chunk's heading path, embedded like a question (for re-scoring only)
SPARSE = "sparse"
_PAGE = 256
_UPSERT_BATCH = 128


@dataclass(frozen=True)
class ChunkPoint:
    """A chunk ready to store: its id, its vectors and its payload (must carry client_id)."""

    id: str
    dense: list[float]
    heading: list[float]
    sparse: tuple[list[int], list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class ScoredChunk:
    """A search hit: payload, its RRF score, and the query's cosine to its text and heading vectors."""

    id: str
    payload: dict[str, Any]
    fused_score: float
    dense_score: float
    heading_score: float


_build_lock = threading.Lock()
_local_lock = threading.RLock()
_client: QdrantClient | None = None
_local_path_override: Path | None = None
_ensured: set[str] = set()


def configure(*, path: Path | None = None) -> None:
    """Use an embedded store in `path` from now on (tests, benchmarks); None returns to settings."""
    global _local_path_override
    close()
    _local_path_override = path


def close() -> None:
    """Close the client (releasing the local folder); the next call builds a new one."""
    global _client
    with _build_lock:
        if _client is not None:
            try:
                _client.close()
            except Exception:  # closing must never mask the caller's own outcome
                logger.warning("qdrant.close_failed", extra={"service": "qdrant"})
        _client = None
        _ensured.clear()


def is_local() -> bool:
    """True when the embedded store is in use (no server configured, or a test override)."""
    return _local_path_override is not None or not settings.qdrant_is_server


def _build_client() -> QdrantClient:
    if is_local():
        path = _local_path_override or settings.qdrant_path
        path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(path))
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    timeout = max(1, math.ceil(settings.qdrant_timeout_seconds))
    if settings.qdrant_url:
        return QdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=timeout, check_compatibility=False)
    return QdrantClient(host=settings.qdrant_host, port=settings.qdrant_port, api_key=api_key, timeout=timeout, check_compatibility=False)


def _get_client() -> QdrantClient:
    global _client
    with _build_lock:
        if _client is None:
            _client = _build_client()
        return _client


@contextmanager
def _serialized() -> Iterator[None]:
    if not is_local():
        yield
        return
    if not _local_lock.acquire(timeout=settings.qdrant_lock_timeout_seconds):
        raise TimeoutError("embedded qdrant is busy")
    try:
        yield
    finally:
        _local_lock.release()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429)
    return isinstance(exc, (ResponseHandlingException, httpx.TransportError))


def _run(operation: str, call: Callable[[QdrantClient], T], *, retry: bool = True) -> T:
    started = time.monotonic()
    try:
        if is_local():
            # Local calls fail deterministically (bad input, locked folder): retrying would not help.
            with _serialized():
                return call(_get_client())
        attempts = settings.qdrant_retries if retry else 1
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(max(1, attempts)) | stop_after_delay(settings.qdrant_timeout_seconds * 2),
            wait=wait_exponential(multiplier=0.2, max=2),
            reraise=True,
        )
        return retrying(lambda: call(_get_client()))
    except ConfigError:
        raise
    except Exception as exc:
        logger.error(
            "qdrant.call_failed",
            extra={
                "service": "qdrant",
                "operation": operation,
                "error_type": type(exc).__name__,
                "error": scrub(str(exc))[:300],
                "mode": "local" if is_local() else "server",
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )
        raise ExternalServiceError("qdrant", f"{operation} failed: {type(exc).__name__}", retryable=_is_transient(exc)) from exc


def _tenant_filter(client_id: str, *extra: models.Condition) -> models.Filter:
    if not isinstance(client_id, str) or not client_id.strip():
        raise ValueError("client_id must be a non-empty string")
    tenant = models.FieldCondition(key="client_id", match=models.MatchValue(value=client_id))
    return models.Filter(must=[tenant, *extra])


def _source_condition(source: str) -> models.FieldCondition:
    return models.FieldCondition(key="source", match=models.MatchValue(value=source))


def ping() -> bool:
    """True if Qdrant answers a cheap call now (one attempt, for /health)."""
    try:
        _run("ping", lambda client: client.get_collections(), retry=False)
    except ExternalServiceError:
        return False
    return True


def ensure_collection(*, collection: str, dense_dim: int) -> None:
    """Create the hybrid collection (dense cosine + sparse with IDF) if missing; check its dense size."""
    if collection in _ensured:
        return

    def call(client: QdrantClient) -> int | None:
        if client.collection_exists(collection):
            params = client.get_collection(collection).config.params.vectors
            if not isinstance(params, dict) or DENSE not in params or HEADING not in params:
                return None  # made by something else: refuse rather than mix layouts
            return params[DENSE].size
        try:
            client.create_collection(
                collection,
                vectors_config={
                    DENSE: models.VectorParams(size=dense_dim, distance=models.Distance.COSINE),
                    # never searched, only read back for re-scoring: keep it out of the HNSW index
                    HEADING: models.VectorParams(size=dense_dim, distance=models.Distance.COSINE, hnsw_config=models.HnswConfigDiff(m=0)),
                },
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # another process created it first: fine
                raise
        if not is_local():  # local mode ignores payload indexes (and warns about them)
            client.create_payload_index(
                collection,
                "client_id",
                field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            )
            client.create_payload_index(collection, "source", field_schema=models.PayloadSchemaType.KEYWORD)
        return dense_dim

    size = _run("ensure_collection", call)
    if size != dense_dim:
        raise ConfigError(
            f"collection {collection} does not fit this embedder ({dense_dim}-dim dense + heading + sparse "
            f"vectors; it has {size}): use another QDRANT_COLLECTION and re-ingest"
        )
    _ensured.add(collection)


def upsert(*, collection: str, points: Sequence[ChunkPoint]) -> None:
    """Insert or replace points (same id = same chunk slot)."""
    for point in points:
        if not point.payload.get("client_id"):
            raise ValueError("every point needs a client_id payload")
    for start in range(0, len(points), _UPSERT_BATCH):
        batch = [
            models.PointStruct(
                id=point.id,
                vector={
                    DENSE: point.dense,
                    HEADING: point.heading,
                    SPARSE: models.SparseVector(indices=point.sparse[0], values=point.sparse[1]),
                },
                payload=point.payload,
            )
            for point in points[start : start + _UPSERT_BATCH]
        ]
        _upsert_batch(collection, batch)


def _upsert_batch(collection: str, batch: list[models.PointStruct]) -> None:
    _run("upsert", lambda client: client.upsert(collection, points=batch, wait=True))


def delete(*, collection: str, client_id: str, source: str | None = None, keep_ids: Sequence[str] = ()) -> int:
    """Delete a tenant's points (optionally only one source, sparing `keep_ids`); returns how many."""
    conditions: list[models.Condition] = [_source_condition(source)] if source is not None else []
    flt = _tenant_filter(client_id, *conditions)
    if keep_ids:
        flt.must_not = [models.HasIdCondition(has_id=list(keep_ids))]

    def call(client: QdrantClient) -> int:
        doomed = client.count(collection, count_filter=flt, exact=True).count
        if doomed:
            client.delete(collection, points_selector=models.FilterSelector(filter=flt), wait=True)
        return doomed

    return _run("delete", call)


def payloads(*, collection: str, client_id: str, fields: Sequence[str], source: str | None = None) -> list[dict[str, Any]]:
    """The chosen payload fields of every point of a tenant (optionally one source)."""
    conditions: list[models.Condition] = [_source_condition(source)] if source is not None else []
    flt = _tenant_filter(client_id, *conditions)

    def call(client: QdrantClient) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            records, offset = client.scroll(
                collection, scroll_filter=flt, limit=_PAGE, offset=offset, with_payload=list(fields), with_vectors=False
            )
            rows.extend(record.payload or {} for record in records)
            if offset is None:
                return rows

    return _run("scroll", call)


def hybrid_search(
    *,
    collection: str,
    client_id: str,
    dense: list[float],
    sparse: tuple[list[int], list[float]],
    limit: int,
    prefetch_limit: int,
) -> list[ScoredChunk]:
    """Dense + sparse candidates of one tenant fused by RRF; each hit also carries its dense cosines."""
    flt = _tenant_filter(client_id)
    prefetch = [models.Prefetch(query=dense, using=DENSE, filter=flt, limit=prefetch_limit)]
    if sparse[0]:  # a query of stopwords only has no lexical part
        lexical = models.SparseVector(indices=sparse[0], values=sparse[1])
        prefetch.append(models.Prefetch(query=lexical, using=SPARSE, filter=flt, limit=prefetch_limit))
    timeout = max(1, math.ceil(settings.qdrant_timeout_seconds))

    def call(client: QdrantClient) -> list[models.ScoredPoint]:
        return client.query_points(
            collection,
            prefetch=prefetch,
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            # Fusion only ranks what the prefetches found, and both carry the tenant filter; a
            # top-level copy would cost embedded mode one more Python pass over every point.
            limit=limit,
            with_payload=True,
            with_vectors=[DENSE, HEADING],
            timeout=timeout,
        ).points

    query_norm = math.sqrt(sum(x * x for x in dense)) or 1.0

    def cosine(point: models.ScoredPoint, name: str) -> float:
        vector = point.vector.get(name) if isinstance(point.vector, dict) else None
        if not isinstance(vector, list) or not vector or not isinstance(vector[0], float):
            return 0.0
        values = [float(x) for x in vector]
        norm = math.sqrt(sum(x * x for x in values)) or 1.0
        return sum(a * b for a, b in zip(dense, values, strict=False)) / (norm * query_norm)

    return [
        ScoredChunk(
            id=str(point.id),
            payload=point.payload or {},
            fused_score=point.score,
            dense_score=cosine(point, DENSE),
            heading_score=cosine(point, HEADING),
        )
        for point in _run("search", call)
    ]
