"""The FastAPI application: routers, middlewares, error handlers; its lifespan starts and stops the process's
background work (app/bootstrap.py)."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import bootstrap
from app.config import settings
from app.db import connection_budget
from app.middleware import BodySizeLimit, WebhookBacklog
from app.routers import admin, debug, health, media, metrics, telegram_webhook, webhook
from app.services.knowledge import qdrant
from app.utils.errors import TrufflesError

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    bootstrap.configure_logging()
    # Sync routes run in this thread pool; they share the pool of everything else (app/db.py, connection_budget).
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.http_threads
    try:
        with bootstrap.background_work():
            # What is loaded by now lives as long as the process: keep it out of the collector's full passes,
            # which otherwise stop every thread for ~140 ms (seen as acknowledgement stalls under load).
            gc.collect()
            gc.freeze()
            logger.info(
                "app.started",
                extra={
                    "worker_mode": settings.worker_mode,
                    "worker_threads": settings.worker_threads,
                    "db_connections_max": connection_budget().api_process,
                },
            )
            yield
    finally:
        qdrant.close()
        logger.info("app.stopped")


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def create_app() -> FastAPI:
    app = FastAPI(
        title="Truffles",
        lifespan=lifespan,
        docs_url="/docs" if settings.debug else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.debug else None,
    )
    # An upload's files are each capped by the admin router; the multipart framing needs a little more.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, admin_max_bytes=settings.kb_upload_max_bytes + 64 * 1024)
    app.add_middleware(WebhookBacklog)
    app.include_router(webhook.router)
    app.include_router(telegram_webhook.router)
    app.include_router(health.router)
    app.include_router(debug.router)
    app.include_router(metrics.router)
    app.include_router(admin.router)
    app.include_router(media.router)

    @app.exception_handler(TrufflesError)
    async def domain_error(request: Request, exc: TrufflesError) -> JSONResponse:
        level = logging.ERROR if exc.status_code >= 500 else logging.INFO
        logger.log(
            level,
            "request.rejected",
            extra={"path": request.url.path, "status_code": exc.status_code, "code": exc.code, "reason": exc.message},
        )
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail, "code": exc.code})

    @app.exception_handler(RequestValidationError)
    async def invalid_payload(request: Request, exc: RequestValidationError) -> JSONResponse:
        reason = _validation_reason(exc)
        logger.info("request.invalid", extra={"path": request.url.path, "reason": reason})
        return JSONResponse(status_code=422, content={"detail": reason, "code": "invalid_payload"})

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The gateway retries on 5xx, and nothing was half-written: each write is one transaction.
        logger.critical("db.unavailable", extra={"path": request.url.path, "error_type": type(exc).__name__})
        return JSONResponse(
            status_code=503, content={"detail": "database unavailable, retry later", "code": "unavailable"}, headers={"Retry-After": "5"}
        )

    @app.exception_handler(DataError)
    async def unstorable(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value we let through validation: the sender's data is at fault, not the service.
        logger.error("request.unstorable", extra={"path": request.url.path, "error_type": type(exc.orig).__name__})
        return JSONResponse(
            status_code=422, content={"detail": "the payload contains data that cannot be stored", "code": "invalid_payload"}
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request.crashed", extra={"path": request.url.path, "error_type": type(exc).__name__})
        return JSONResponse(status_code=500, content={"detail": "internal error", "code": "internal_error"})

    return app


app = create_app()
