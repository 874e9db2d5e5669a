"""Domain exceptions. Services raise these; one handler in main.py turns them into responses."""


class TrufflesError(Exception):
    """Base for errors a caller can act on; carries the HTTP status it maps to."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def detail(self) -> str:
        """What the HTTP caller is told."""
        return self.message


class ConfigError(TrufflesError):
    status_code = 503
    code = "not_configured"


class NotFound(TrufflesError):
    status_code = 404
    code = "not_found"


class Unauthorized(TrufflesError):
    status_code = 401
    code = "unauthorized"


class BadRequest(TrufflesError):
    status_code = 422
    code = "invalid_payload"


class PayloadTooLarge(TrufflesError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(TrufflesError):
    status_code = 503
    code = "unavailable"


class MediaRejected(TrufflesError):
    """A customer's media file was not fetched: `reason` says why (see services/channels/media.py for the list)."""

    status_code = 422
    code = "media_rejected"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"media rejected: {reason}")
        self.reason = reason


_WHAT_FAILED = {"qdrant": "knowledge base", "openai": "OpenAI", "chatflow": "WhatsApp gateway", "elevenlabs": "speech recognition"}


class ExternalServiceError(TrufflesError):
    """An external system (OpenAI, ChatFlow, Telegram, ElevenLabs, Qdrant) failed after its retries. An HTTP
    caller it reaches gets a 503 naming what failed (the error itself is only logged) and may retry."""

    status_code = 503
    code = "unavailable"

    def __init__(self, service: str, message: str, *, retryable: bool = True, uncertain: bool = False) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.message = message
        self.retryable = retryable
        # The request went out and no answer came back (a read timeout, a dropped connection): the system may
        # have acted on it. Not repeated blindly where repeating it would show twice (a message to a customer).
        self.uncertain = uncertain

    @property
    def detail(self) -> str:
        return f"{_WHAT_FAILED.get(self.service, self.service)} unavailable ({self.service}), retry later"
