from fastapi import APIRouter

from app.dependencies import WebhookClient
from app.schemas.chatflow import ChatFlowWebhook, WebhookAck
from app.services import message_service

router = APIRouter(tags=["webhook"])


@router.post("/webhook/{client_slug}", response_model=WebhookAck, response_model_exclude_none=True)
def receive_message(payload: ChatFlowWebhook, client: WebhookClient) -> WebhookAck:
    """ChatFlow delivers a WhatsApp message: store it once and answer at once; the reply comes later."""
    result = message_service.ingest(client=client, payload=payload)
    return WebhookAck(status="ok" if result.status == "ok" else result.status, reason=result.reason)
