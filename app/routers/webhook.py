import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from app.config import settings
from app.dependencies import body_schema, parse_body
from app.schemas.chatflow import ChatFlowWebhook, WebhookAck
from app.services import clients
from app.services.conversation import inbound

router = APIRouter(tags=["webhook"])

# The acknowledgement's blocking calls (Redis, PostgreSQL) run on threads of their own: under load a plain
# executor hop costs ~20 µs of CPU against ~70 µs for the generic thread-pool path of sync routes.
_threads = ThreadPoolExecutor(max_workers=settings.http_threads, thread_name_prefix="webhook")


@router.post(
    "/webhook/{client_slug}",
    response_model=None,
    responses={200: {"model": WebhookAck, "description": "Stored once and scheduled (ok), seen before (duplicate), or ignored"}},
    openapi_extra=body_schema(ChatFlowWebhook),
)
async def receive_message(
    client_slug: str,
    request: Request,
    x_webhook_secret: Annotated[str | None, Header()] = None,
    secret: Annotated[str | None, Query(max_length=200, description="the webhook secret, for gateways that cannot set headers")] = None,
) -> JSONResponse:
    """ChatFlow delivers a WhatsApp message: store it once and answer at once; the reply comes later.

    The sender is authenticated (the client's secret) before the body is parsed: nothing an anonymous caller
    sends reaches a validator."""
    body = await request.body()
    presented = x_webhook_secret or secret
    result = await asyncio.get_running_loop().run_in_executor(_threads, _ingest, client_slug, body, presented)
    # Answered as is (the shape of WebhookAck): re-validating our own two fields cost ~7% of an acknowledgement.
    ack = {"status": result.status} if result.reason is None else {"status": result.status, "reason": result.reason}
    return JSONResponse(ack)


def _ingest(client_slug: str, body: bytes, secret: str | None) -> inbound.IngestResult:
    client = clients.webhook_client(client_slug, secret)
    return inbound.ingest(client=client, payload=parse_body(ChatFlowWebhook, body))
