"""Structured logging: one JSON object per line, phones masked, secrets never printed."""

import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra=` and is a field of the event.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_PHONE_KEYS = frozenset({"phone", "sender", "jid", "remote_jid", "chat_phone"})
_SECRET_KEYS = re.compile(r"token|secret|password|api_key|authorization", re.IGNORECASE)
# A run of 10-15 digits, optionally after '+', looks like a phone number wherever it appears in text.
_PHONE_IN_TEXT = re.compile(r"(?<![\d.])\+?\d{6,11}(\d{4})(?!\d)")
# Query-string credentials, e.g. ChatFlow's ?token=... or Telegram's /bot<token>/ path segment.
_TOKEN_IN_URL = re.compile(r"(token|key|secret)=[^&\s\"']+", re.IGNORECASE)
_BOT_TOKEN_IN_PATH = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")
# What every one of the three patterns above needs to match: text without any of it is left as it is, after one
# search instead of three substitutions (most fields, on every log line).
_MAYBE_SENSITIVE = re.compile(r"=|/bot|\d{10}", re.IGNORECASE)


def mask_phone(value: object) -> str:
    """Keep only the last four digits: '77015705555' -> '*******5555'."""
    text = str(value)
    digits = re.sub(r"\D", "", text.split("@", 1)[0])
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


def scrub(text: str) -> str:
    """Mask phones and strip credentials from free text (exception messages, URLs)."""
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
    text = _TOKEN_IN_URL.sub(r"\1=***", text)
    text = _BOT_TOKEN_IN_PATH.sub("/bot***", text)
    return _PHONE_IN_TEXT.sub(lambda m: "*" * (len(m.group(0)) - 4) + m.group(1), text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether a field of this name holds a secret (field names are few: each is judged once)."""
    return _SECRET_KEYS.search(key) is not None


def _clean(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _PHONE_KEYS:
        return mask_phone(value)
    if _secret_key(key):
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, dict):
        return {k: _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(key, v) for v in value]
    return scrub(str(value))


_second: tuple[int, str] = (0, "")  # the last second rendered, shared by the threads (replaced whole)


def _timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds, as datetime.isoformat(timespec="milliseconds") gives it; the date and
    time of day are rendered once a second."""
    global _second
    whole, micro = divmod(round(created * 1_000_000), 1_000_000)  # rounded to the microsecond, as datetime does
    second = _second
    if second[0] != whole:
        second = _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{second[1]}.{micro // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = _clean(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


class TextFormatter(JsonFormatter):
    """Human-friendly single line for local runs: 'level event key=value ...'."""

    def format(self, record: logging.LogRecord) -> str:
        data = json.loads(super().format(record))
        head = f"{data.pop('ts')} {data.pop('level'):<8} {data.pop('event')}"
        data.pop("logger", None)
        exc = data.pop("exc", None)
        line = head + "".join(f" {k}={v}" for k, v in data.items())
        return f"{line}\n{exc}" if exc else line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install the formatter on the root logger (idempotent) and quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_truffles", False):
            root.removeHandler(existing)
    handler._truffles = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # (the OpenAI SDK's HTTP client logs each request at INFO as "httpx2"; ai.call_ok says it with the latency)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "openai", "elevenlabs", "dramatiq", "pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn's access log prints full request lines; our own events carry what matters.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # A record's caller (file, line, function), thread and process names are in no line we print: not gathering
    # them is the standard library's documented optimisation (the logging HOWTO, "Optimization"); the caller's
    # lookup walks the stack on every call, a good part of what the webhook's one line a message costs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
