"""What the webhook's security checks cost per delivery, step by step (`python -m bench.security_micro`).

Times, on a typical ChatFlow delivery, the steps issue #14 put on the acknowledgement path: the slug's
pattern, the bounded client cache, the secret's digest compared in constant time, the JSON depth check and
the payload's validation from the raw body (which FastAPI did before, with its own overhead). No database or
Redis: the client is put in the cache as a hit would find it. Run it on a quiet machine."""

import json
import timeit
import uuid

from app.config import settings
from app.schemas import check_depth, load_json
from app.schemas.chatflow import ChatFlowWebhook
from app.schemas.client import ClientSettings
from app.services import clients
from app.utils import crypto

SECRET = crypto.new_shared_secret()
BODY = json.dumps(
    {
        "messageType": "text",
        "message": "Здравствуйте! Сколько стоит маникюр с покрытием и есть ли запись на субботу?",
        "metadata": {
            "sender": "Айгуль",
            "timestamp": 1764547200,
            "messageId": "3EB0C767D8F1A2B3",
            "remoteJid": "77010000001@s.whatsapp.net",
        },
        "mediaData": None,
    },
    ensure_ascii=False,
).encode()


def _per_call_us(stmt: object, number: int = 20_000) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))  # type: ignore[arg-type]
    return best / number * 1e6


def main() -> None:
    info = clients.ClientInfo(uuid.uuid4(), "bench", True, crypto.digest(SECRET), False, ClientSettings())
    clients._cache.put("bench", info)
    data = json.loads(BODY)
    steps = {
        "slug pattern": lambda: clients.SLUG_PATTERN.fullmatch("bench"),
        "client cache hit (LRU)": lambda: clients._cache.get("bench"),
        "secret digest + compare": lambda: crypto.matches(SECRET, info.webhook_secret_hash or ""),
        "webhook_client (the three above)": lambda: clients.webhook_client("bench", SECRET),
        "JSON depth check": lambda: check_depth(data, settings.max_json_depth),
        "json.loads + depth check": lambda: load_json(BODY, max_depth=settings.max_json_depth),
        "model_validate (as before)": lambda: ChatFlowWebhook.model_validate(json.loads(BODY)),
    }
    print(f"{'step':<36} µs per delivery")
    for name, fn in steps.items():
        print(f"{name:<36} {_per_call_us(fn):8.2f}")


if __name__ == "__main__":
    main()
