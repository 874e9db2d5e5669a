"""OpenAI chat completions and prompt assembly. Owns the client, its timeout, retry and error translation."""

import logging
import time
from dataclasses import dataclass
from functools import lru_cache

import openai
from openai import OpenAI
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from app import metrics
from app.config import settings
from app.utils.errors import ConfigError, ExternalServiceError
from app.utils.text import truncate

logger = logging.getLogger(__name__)

SERVICE = "openai"
_MESSAGE_CHARS = 2000
_TURN_CHARS = 4000

DEFAULT_PERSONA = "Ты — вежливый ассистент компании в WhatsApp. Помогаешь клиентам с вопросами о услугах, ценах и записи."
RULES = (
    "Правила ответа:\n"
    "- Отвечай на языке клиента: по-русски или по-казахски.\n"
    "- Пиши кратко и по делу, как в мессенджере, без markdown-разметки.\n"
    "- Не выдумывай цены, адреса, время работы и условия. Используй только справочные материалы и историю диалога.\n"
    "- Если ответа нет в материалах, честно скажи, что уточнишь у коллег.\n"
    "- Сообщения с ролью assistant — это сторона компании (бот или менеджер); продолжай разговор с того места, где он остановился."
)

# Retried once: these are the failures a second try can fix. 4xx errors such as a bad key are not.
_RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "user" | "assistant"
    content: str


def is_configured() -> bool:
    return settings.openai_api_key is not None


@lru_cache(maxsize=4)
def _client(api_key: str, base_url: str | None, timeout: float) -> OpenAI:
    # Built once per configuration; the SDK's own retries are off so tenacity is the only retry policy.
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


def client() -> OpenAI:
    """The shared OpenAI client for the current settings."""
    return _client(settings.require("openai_api_key"), settings.openai_base_url, settings.openai_timeout_seconds)


def build_messages(
    *, system_prompt: str, history: list[ChatTurn], turn_text: str, knowledge: list[str] | None = None, client_name: str = ""
) -> list[dict[str, str]]:
    """The chat messages for one answer: persona + rules + reference material, history, the customer's turn."""
    persona = system_prompt.strip() or DEFAULT_PERSONA
    system = f"{persona}\n\n{RULES}"
    if client_name:
        system += f"\n\nКомпания: {client_name}."
    if knowledge:
        blocks = "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(knowledge, 1))
        system += f"\n\nСправочные материалы (используй только их для фактов):\n<<<\n{blocks}\n>>>"
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": truncate(t.content, _MESSAGE_CHARS)} for t in history if t.content.strip()]
    messages.append({"role": "user", "content": truncate(turn_text, _TURN_CHARS)})
    return messages


def complete(
    messages: list[dict[str, str]],
    *,
    max_tokens: int | None = None,
    json_mode: bool = False,
    timeout: float | None = None,
    log_extra: dict[str, object] | None = None,
) -> str:
    """One chat completion with the configured timeout and one retry; raises ExternalServiceError on failure."""
    started = time.monotonic()
    extra = {"service": SERVICE, "model": settings.openai_model, **(log_extra or {})}
    labels = (str(extra.get("client", "-")), str(extra.get("purpose", "answer")))
    metrics.ai_calls.labels(*labels).inc()
    try:
        text = _complete_with_retry(
            messages, max_tokens or settings.openai_max_tokens, json_mode, timeout or settings.openai_timeout_seconds
        )
    except ConfigError:
        raise
    except (openai.APIError, ValueError, AttributeError, TypeError) as exc:  # a proxy's HTML 200 is not a completion
        metrics.ai_errors.labels(*labels).inc()
        logger.error(
            "ai.call_failed",
            extra={**extra, "error_type": type(exc).__name__, "error": str(exc)[:300], "elapsed_ms": _ms(started)},
        )
        raise ExternalServiceError(SERVICE, type(exc).__name__) from exc
    logger.info("ai.call_ok", extra={**extra, "elapsed_ms": _ms(started)})
    return text


def generate_reply(
    *,
    system_prompt: str,
    history: list[ChatTurn],
    turn_text: str,
    knowledge: list[str] | None = None,
    client_name: str = "",
    log_extra: dict[str, object] | None = None,
) -> str:
    """The assistant's answer to the customer's turn."""
    messages = build_messages(
        system_prompt=system_prompt, history=history, turn_text=turn_text, knowledge=knowledge, client_name=client_name
    )
    return complete(messages, log_extra=log_extra)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("ai.retry", extra={"service": SERVICE, "attempt": state.attempt_number, "error_type": type(exc).__name__})


@retry(
    stop=stop_after_attempt(2),
    wait=wait_exponential(multiplier=0.5, min=0.5, max=4),
    retry=retry_if_exception_type(_RETRYABLE),
    before_sleep=_log_retry,
    reraise=True,
)
def _complete_with_retry(messages: list[dict[str, str]], max_tokens: int, json_mode: bool, timeout: float) -> str:
    response = client().chat.completions.create(
        model=settings.openai_model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.3,
        response_format={"type": "json_object"} if json_mode else openai.omit,
        timeout=timeout,
    )
    content = response.choices[0].message.content if response.choices else None
    if not content or not content.strip():
        raise ValueError("empty completion")
    return content.strip()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
