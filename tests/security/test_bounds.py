"""Findings 2 and 3: no memory or query per unknown slug, and no body that can crash the webhook (deep JSON,
huge numbers, oversize chunked bodies) before or after the sender is authenticated."""

import json

from sqlalchemy import event

from app.db import engine
from app.services import clients
from app.services.operations import alerts
from tests.conftest import TELEGRAM_SECRET, WEBHOOK_SECRET
from tests.helpers import chatflow_payload, wait_until
from tests.security.helpers import stored_messages


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_unknown_slugs_are_neither_remembered_nor_looked_up_when_they_cannot_exist(api, make_client):
    make_client("salon")
    queries: list[str] = []
    listener = lambda *args: queries.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for slug in ("Salon", "a" * 64, "sa lon", "-salon", "salon.php"):
            assert api.post(f"/webhook/{slug}", json=chatflow_payload("Привет")).status_code == 404
        assert queries == []  # refused by the pattern, before any lookup
        for i in range(300):
            assert api.post(f"/webhook/ghost-{i}", json=chatflow_payload("Привет")).status_code == 404
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert clients.cache_size() == 0  # unknown slugs leave nothing behind
    assert api.post("/webhook/salon", json=chatflow_payload("Привет")).status_code == 200
    assert clients.cache_size() == 1


def test_deep_json_is_refused_with_422_and_raises_no_error_alert(api, make_client):
    make_client("salon")
    alerts.reset()
    for _ in range(6):
        body = json.dumps(chatflow_payload("Привет", extra=json.loads(_deep(400))))
        response = api.post("/webhook/salon", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "nested" in response.json()["detail"]
        # Without the secret it is refused before the body is read as JSON at all.
        bare = api.post("/webhook/salon", content=_deep(5000), headers={"content-type": "application/json", "X-Webhook-Secret": ""})
        assert bare.status_code == 401
    alerts.evaluate()
    assert not any("errors in the last" in text for text in alerts.sent)
    assert stored_messages() == 0


def test_deep_json_to_the_telegram_webhook_is_refused_too(api, telegram):
    headers = {"content-type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    body = '{"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1}, "x": ' + _deep(600) + "}}"
    assert api.post("/telegram-webhook", content=body, headers=headers).status_code == 422
    assert api.post("/telegram-webhook", content=body, headers={**headers, "X-Telegram-Bot-Api-Secret-Token": "x"}).status_code == 401


def test_huge_numbers_do_not_break_the_turn(api, make_client, llm, chatflow):
    make_client("salon")
    llm.set_reply("Здравствуйте!")
    payload = chatflow_payload("Привет", phone="77015550505")
    payload["metadata"]["timestamp"] = 10**400  # more than a float holds
    response = api.post("/webhook/salon", json=payload)
    assert response.json() == {"status": "ok"}
    assert wait_until(lambda: chatflow.sent_texts("77015550505")) == ["Здравствуйте!"]
    image = chatflow_payload("", phone="77015550506", messageType="image")
    image["mediaData"] = {"url": "https://cdn.example/x.jpg", "size": 10**40, "seconds": 1e308, "caption": "чек"}
    assert api.post("/webhook/salon", json=image).status_code == 200


def test_an_oversize_chunked_body_gets_413(api, make_client):
    make_client("salon")

    def chunks():
        for _ in range(400):
            yield b" " * 1024  # no Content-Length: the body is counted as it arrives

    response = api.post(
        "/webhook/salon", content=chunks(), headers={"content-type": "application/json", "X-Webhook-Secret": WEBHOOK_SECRET}
    )
    assert response.status_code == 413
    assert stored_messages() == 0


def test_settings_are_bounded_and_an_old_out_of_bound_one_never_stops_a_client(api, make_client, llm, chatflow, capsys):
    from sqlalchemy import update

    from app import cli
    from app.db import session_scope
    from app.models import Client

    make_client("salon")
    assert cli.main(["client", "update", "--slug", "salon", "--set", f"mute_minutes_first={10**30}"]) == 2
    assert "mute_minutes_first" in capsys.readouterr().err
    with session_scope() as session:  # stored before the bound existed
        session.execute(update(Client).values(settings={"mute_minutes_first": 10**30, "staff_mute_minutes": 10**30}))
    clients.clear_cache()
    llm.set_reply("Здравствуйте!")
    assert api.post("/webhook/salon", json=chatflow_payload("Привет", phone="77015550507")).json() == {"status": "ok"}
    assert wait_until(lambda: chatflow.sent_texts("77015550507")) == ["Здравствуйте!"]
