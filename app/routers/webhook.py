from typing import Annotated

from fastapi import APIRouter, Header

from app.schemas.chatflow import ChatFlowWebhook, WebhookAck
from app.services import client_service, message_service

router = APIRouter(tags=["webhook"])


@router.post("/webhook/{client_slug}", response_model=WebhookAck, response_model_exclude_none=True)
def receive_message(client_slug: str, payload: ChatFlowWebhook, x_webhook_secret: Annotated[str | None, Header()] = None) -> WebhookAck:
    """ChatFlow delivers a WhatsApp message: store it once and answer at once; the reply comes later."""
    client = client_service.webhook_client(client_slug, x_webhook_secret)
    result = message_service.ingest(client=client, payload=payload)
    return WebhookAck(status="ok" if result.status == "ok" else result.status, reason=result.reason)
