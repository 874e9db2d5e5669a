"""Property-based fuzzing of both webhooks: whatever a client sends, the answer is never a 500."""

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from app.db import session_scope
from app.models import Client
from app.services import clients
from fakes.telegram import make_callback_update, make_message_update
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload

FUZZ = hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ALLOWED = {200, 400, 401, 404, 413, 422}
JSON = {"content-type": "application/json"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _ensure_client() -> None:
    with session_scope() as session:
        if session.scalar(select(Client.id).where(Client.slug == "fuzz")) is None:
            clients.create(session, slug="fuzz", name="Fuzz", telegram_chat_id=-100555, telegram_bot_token="100003:fuzz")


def _mutate(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Replace (or add) the value at a key path, e.g. ["metadata", "messageId"]."""
    mutated = copy.deepcopy(base)
    node: Any = mutated
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return mutated


_CHATFLOW_PATHS = [
    ["messageType"],
    ["message"],
    ["metadata"],
    ["metadata", "messageId"],
    ["metadata", "remoteJid"],
    ["metadata", "sender"],
    ["metadata", "timestamp"],
    ["metadata", "fromMe"],
    ["mediaData"],
    ["mediaData", "base64"],
    ["mediaData", "url"],
    ["body"],
]


@FUZZ
@given(body=json_values)
def test_chatflow_webhook_survives_any_json(api, body):
    _ensure_client()
    response = api.post("/webhook/fuzz", content=json.dumps(body), headers=JSON)  # NaN/Infinity literals included
    assert response.status_code in ALLOWED, response.text


@FUZZ
@given(path=st.sampled_from(_CHATFLOW_PATHS), value=json_values, wrap=st.booleans())
def test_chatflow_webhook_survives_type_confusion(api, path, value, wrap):
    _ensure_client()
    payload = _mutate(chatflow_payload("Привет"), path, value)
    response = api.post("/webhook/fuzz", content=json.dumps({"body": payload} if wrap else payload), headers=JSON)
    assert response.status_code in ALLOWED, response.text


@FUZZ
@given(raw=st.binary(max_size=300))
def test_chatflow_webhook_survives_raw_bytes(api, raw):
    _ensure_client()
    response = api.post("/webhook/fuzz", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in ALLOWED


@FUZZ
@given(slug=st.text(max_size=80), secret=st.text(max_size=40).filter(lambda s: s.isprintable() and s.isascii()))
def test_chatflow_webhook_survives_odd_slugs_and_secrets(api, slug, secret):
    response = api.post(f"/webhook/{json.dumps(slug)[1:-1]}", json=chatflow_payload("Привет"), headers={"X-Webhook-Secret": secret})
    assert response.status_code in ALLOWED | {405}


_UPDATES = [
    make_message_update(1, -100555, 7, 501, "Добрый день"),
    make_callback_update(2, -100555, 10, 7, 501, "take_00000000-0000-0000-0000-000000000000"),
]
_TELEGRAM_PATHS = [
    ["update_id"],
    ["message"],
    ["message", "chat"],
    ["message", "text"],
    ["message", "message_thread_id"],
    ["message", "from"],
    ["callback_query"],
    ["callback_query", "data"],
    ["callback_query", "from"],
    ["callback_query", "message"],
]


@FUZZ
@given(base=st.sampled_from(_UPDATES), path=st.sampled_from(_TELEGRAM_PATHS), value=json_values)
def test_telegram_webhook_survives_type_confusion(api, telegram, base, path, value):
    _ensure_client()
    update = _mutate(base, path, value)
    response = api.post(
        "/telegram-webhook", content=json.dumps(update), headers={**JSON, "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    )
    assert response.status_code in ALLOWED, response.text


@FUZZ
@given(body=json_values, data=st.text(max_size=80))
def test_telegram_webhook_survives_any_json_and_callback_data(api, telegram, body, data):
    _ensure_client()
    headers = {**JSON, "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    assert api.post("/telegram-webhook", content=json.dumps(body), headers=headers).status_code in ALLOWED
    update = make_callback_update(3, -100555, 10, 7, 501, data)
    assert api.post("/telegram-webhook", content=json.dumps(update), headers=headers).status_code in ALLOWED
