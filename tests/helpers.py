"""Small helpers shared by the tests."""

import time
from collections.abc import Callable
from itertools import count
from typing import Any

_ids = count(1)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, message: str = "condition") -> Any:
    """Poll until predicate() is truthy (the worker runs asynchronously); fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def chatflow_payload(
    text: str = "Привет", *, phone: str = "77010000001", message_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A ChatFlow webhook body as the gateway sends it."""
    body: dict[str, Any] = {
        "messageType": "text",
        "message": text,
        "metadata": {
            "sender": "Айгуль",
            "timestamp": int(time.time()),
            "messageId": message_id or f"MSG{next(_ids):012d}",
            "remoteJid": f"{phone}@s.whatsapp.net",
        },
        "mediaData": None,
    }
    body.update(overrides)
    return body
