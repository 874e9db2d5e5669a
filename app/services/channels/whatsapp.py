"""ChatFlow, the WhatsApp gateway: send text and media. Owns its timeouts, retries and error translation."""

import logging
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_exponential
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from app import slots
from app.config import settings
from app.models import Client
from app.utils import crypto
from app.utils.errors import ConfigError, ExternalServiceError

logger = logging.getLogger(__name__)

SERVICE = "chatflow"
WHATSAPP_TEXT_LIMIT = 4096
_MEDIA_ENDPOINTS = {
    "image": ("send-image", "imageurl"),
    "audio": ("send-audio", "audiourl"),
    "document": ("send-doc", "docurl"),
    "video": ("send-video", "videourl"),
}

_session = requests.Session()
_session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
_session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))


@dataclass(frozen=True)
class ChatFlowCredentials:
    token: str
    instance_id: str


def credentials_for(client: Client) -> ChatFlowCredentials:
    """The client's own ChatFlow token/instance, else the deployment-wide ones."""
    token = crypto.reveal(client.chatflow_token) or (settings.chatflow_token.get_secret_value() if settings.chatflow_token else None)
    instance = client.chatflow_instance_id or settings.chatflow_instance_id
    if not token:
        raise ConfigError(f"CHATFLOW_TOKEN is not set and client '{client.slug}' has no chatflow token")
    if not instance:
        raise ConfigError(f"CHATFLOW_INSTANCE_ID is not set and client '{client.slug}' has no chatflow instance")
    return ChatFlowCredentials(token=token, instance_id=instance)


def jid_for(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


def send_text(*, creds: ChatFlowCredentials, phone: str, text: str) -> str | None:
    """Send one text (at most 4096 characters) and return ChatFlow's message id, if it gives one."""
    return _send("send-text", creds=creds, phone=phone, params={"msg": text})


def send_media(*, creds: ChatFlowCredentials, phone: str, kind: str, url: str, caption: str | None = None) -> str | None:
    """Send an image, audio, document or video by URL through the matching ChatFlow endpoint (the gateway
    downloads the URL itself)."""
    endpoint, url_param = _MEDIA_ENDPOINTS[kind]
    params = {url_param: url}
    if caption:
        params["caption"] = caption
    return _send(endpoint, creds=creds, phone=phone, params=params)


class _SendFailed(Exception):
    def __init__(self, reason: str, status: int | None = None, *, uncertain: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.uncertain = uncertain  # the request went out and no answer came: the gateway may have sent it


def _retryable(exc: BaseException) -> bool:
    # A 4xx other than 429 is our request's fault; repeating it will not help. A send whose outcome is
    # unknown is not repeated: ChatFlow takes no idempotency key, the customer would get it twice.
    if isinstance(exc, _SendFailed) and (exc.uncertain or (exc.status is not None and 400 <= exc.status < 500 and exc.status != 429)):
        return False
    return isinstance(exc, (_SendFailed, requests.RequestException))


def _went_out(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the gateway: anything but a failure to connect (refused,
    unresolvable, connect timeout) happened after the request was written."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return not isinstance(reason, (NewConnectionError, ConnectTimeoutError, NameResolutionError))
    return isinstance(exc, (requests.Timeout, requests.exceptions.ChunkedEncodingError))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("whatsapp.send_retry", extra={"service": SERVICE, "attempt": state.attempt_number, "error_type": type(exc).__name__})


def _send(endpoint: str, *, creds: ChatFlowCredentials, phone: str, params: dict[str, str]) -> str | None:
    base = settings.require("chatflow_url")
    url = base.rsplit("/", 1)[0] + "/" + endpoint if not base.endswith(endpoint) else base
    query = {"token": creds.token, "instance_id": creds.instance_id, "jid": jid_for(phone), **params}
    try:
        with slots.waiting():
            return _send_with_retry(url, query)
    except (_SendFailed, requests.RequestException) as exc:
        status = exc.status if isinstance(exc, _SendFailed) else None
        uncertain = isinstance(exc, _SendFailed) and exc.uncertain
        logger.error(
            "whatsapp.send_failed",
            extra={
                "service": SERVICE,
                "endpoint": endpoint,
                "phone": phone,
                "error_type": type(exc).__name__,
                "error": str(exc),
                "status_code": status,
                "uncertain": uncertain,
            },
        )
        raise ExternalServiceError(SERVICE, str(exc), retryable=_retryable(exc), uncertain=uncertain) from None


@retry(
    stop=stop_after_attempt(2),
    wait=wait_exponential(multiplier=0.5, min=0.5, max=2),
    retry=retry_if_exception(_retryable),
    before_sleep=_log_retry,
    reraise=True,
)
def _send_with_retry(url: str, query: dict[str, str]) -> str | None:
    # The token rides in the query string, so neither the URL nor the request is ever logged.
    try:
        response = _session.get(url, params=query, timeout=(3.05, settings.chatflow_timeout_seconds))
    except requests.RequestException as exc:
        went_out = _went_out(exc)
        detail = "no answer after the request went out" if went_out else "request failed"
        raise _SendFailed(f"{detail}: {type(exc).__name__}", uncertain=went_out) from None
    try:
        body: Any = response.json()
    except ValueError:
        raise _SendFailed(f"HTTP {response.status_code}, body is not JSON", response.status_code) from None
    if response.status_code >= 400 or not isinstance(body, dict) or body.get("success") is not True:
        reason = body.get("message") if isinstance(body, dict) else None
        raise _SendFailed(f"HTTP {response.status_code}, success=false: {str(reason)[:200]}", response.status_code)
    data: dict[str, Any] = body["data"] if isinstance(body.get("data"), dict) else {}
    message_id = data.get("messageId") or data.get("id") or body.get("messageId") or body.get("id")
    return str(message_id) if message_id else None
