import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path

from app.config import settings
from app.dependencies import RawBody, body_schema, parse_body
from app.schemas.telegram import TgUpdate
from app.services.handover import bots, manager_actions
from app.utils.errors import ConfigError, Unauthorized

router = APIRouter(tags=["telegram"])
_BODY = body_schema(TgUpdate)
SecretHeader = Annotated[str | None, Header(alias="X-Telegram-Bot-Api-Secret-Token")]


@router.post("/telegram-webhook/{bot_id}", openapi_extra=_BODY)
def telegram_bot_webhook(bot_id: Annotated[int, Path(ge=1, lt=2**63)], body: RawBody, secret: SecretHeader = None) -> dict[str, Any]:
    """One bot's updates (managers' button presses and replies), with the secret `telegram set-webhook` gave it.
    Answered fast: Telegram redelivers anything that is not a 2xx."""
    if not bots.verify(bot_id, secret):
        raise Unauthorized("invalid X-Telegram-Bot-Api-Secret-Token for this bot")
    return manager_actions.handle_update(parse_body(TgUpdate, body), bot_id=bot_id)


@router.post("/telegram-webhook", openapi_extra=_BODY)
def telegram_webhook(body: RawBody, secret: SecretHeader = None) -> dict[str, Any]:
    """The same for bots set up before per-bot secrets, with the deployment's TELEGRAM_WEBHOOK_SECRET."""
    if settings.telegram_webhook_secret is None:
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET is not set: Telegram updates are refused")
    expected = settings.telegram_webhook_secret.get_secret_value().encode()
    if not hmac.compare_digest((secret or "").encode(), expected):
        raise Unauthorized("invalid X-Telegram-Bot-Api-Secret-Token")
    return manager_actions.handle_update(parse_body(TgUpdate, body))
