import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header

from app.config import settings
from app.schemas.telegram import TgUpdate
from app.services.handover import manager_actions
from app.utils.errors import ConfigError, Unauthorized

router = APIRouter(tags=["telegram"])


@router.post("/telegram-webhook")
def telegram_webhook(update: TgUpdate, x_telegram_bot_api_secret_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Managers' button presses and replies. Answered fast: Telegram redelivers anything that is not a 2xx."""
    if settings.telegram_webhook_secret is None:
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET is not set: Telegram updates are refused")
    expected = settings.telegram_webhook_secret.get_secret_value().encode()
    if not hmac.compare_digest((x_telegram_bot_api_secret_token or "").encode(), expected):
        raise Unauthorized("invalid X-Telegram-Bot-Api-Secret-Token")
    return manager_actions.handle_update(update)
