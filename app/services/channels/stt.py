"""ElevenLabs speech-to-text for voice notes. Owns the SDK client, its timeout, retry and error translation."""

import io
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import httpx
import mutagen
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_exponential

from app import slots
from app.config import settings
from app.utils.errors import ExternalServiceError

logger = logging.getLogger(__name__)

SERVICE = "elevenlabs"
# A second try can fix these; a bad key (401), a bad request (400) or an unreadable file (422) cannot.
_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True)
class Transcript:
    text: str  # "" when nothing was recognised
    language_code: str | None


def is_configured() -> bool:
    return settings.elevenlabs_api_key is not None


@lru_cache(maxsize=4)
def _client(api_key: str, base_url: str, timeout: float) -> ElevenLabs:
    # Built once per configuration. Redirects are not followed: an API answer is never a redirect we want.
    return ElevenLabs(api_key=api_key, base_url=base_url.rstrip("/"), timeout=timeout, follow_redirects=False)


def client() -> ElevenLabs:
    """The shared ElevenLabs client for the current settings."""
    return _client(settings.require("elevenlabs_api_key"), settings.elevenlabs_base_url, settings.elevenlabs_timeout_seconds)


def transcribe(*, audio: bytes, filename: str, mimetype: str | None, language: str | None = None) -> Transcript:
    """The text of a voice note; one retry on transient failures, ExternalServiceError after it."""
    started = time.monotonic()
    extra = {"service": SERVICE, "model": settings.elevenlabs_model, "bytes": len(audio)}
    sdk = client()  # ConfigError (no key) propagates: that is not a failure of ElevenLabs
    try:
        with slots.waiting():
            transcript = _convert_with_retry(sdk, audio, filename, mimetype, language)
    except (ApiError, httpx.HTTPError, ValueError, TypeError, AttributeError) as exc:
        status = getattr(exc, "status_code", None)
        logger.error(
            "stt.failed",
            extra={**extra, "error_type": type(exc).__name__, "status_code": status, "elapsed_ms": _ms(started)},
        )
        raise ExternalServiceError(SERVICE, f"{type(exc).__name__} {status or ''}".strip(), retryable=_retryable(exc)) from exc
    logger.info(
        "stt.ok",
        extra={**extra, "language": transcript.language_code, "chars": len(transcript.text), "elapsed_ms": _ms(started)},
    )
    return transcript


def duration_seconds(audio: bytes) -> float | None:
    """How long a voice note plays, read from its container (Ogg/Opus, MP3, M4A, ...), before it is paid
    for; None when the bytes are no audio container mutagen knows."""
    try:
        parsed = mutagen.File(io.BytesIO(audio))
        seconds = float(parsed.info.length) if parsed is not None and parsed.info is not None else None
    except Exception:  # mutagen raises its own and plain errors for damaged files
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return True
    if isinstance(exc, ApiError):
        status = exc.status_code or 0
        return status >= 500 or status in _RETRYABLE_STATUS
    return False


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    status = getattr(exc, "status_code", None)
    logger.warning(
        "stt.retry", extra={"service": SERVICE, "attempt": state.attempt_number, "error_type": type(exc).__name__, "status_code": status}
    )


@retry(
    stop=stop_after_attempt(2),
    wait=wait_exponential(multiplier=0.3, min=0.3, max=2),
    retry=retry_if_exception(_retryable),
    before_sleep=_log_retry,
    reraise=True,
)
def _convert_with_retry(sdk: ElevenLabs, audio: bytes, filename: str, mimetype: str | None, language: str | None) -> Transcript:
    # The SDK's own retries stay off: they re-send the request without its form fields (model_id...).
    response = sdk.speech_to_text.convert(
        model_id=settings.elevenlabs_model,
        file=(filename, audio, mimetype),
        language_code=language or None,  # None is left out of the form: the model detects the language
        request_options={"max_retries": 0},
    )
    text = getattr(response, "text", None)
    if text is not None and not isinstance(text, str):
        raise TypeError("transcript text is not a string")
    return Transcript(text=(text or "").strip(), language_code=getattr(response, "language_code", None))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
